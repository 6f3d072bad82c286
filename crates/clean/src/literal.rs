//! A parser for Python literals (what `repr()` prints and `ast.literal_eval` reads back).
//!
//! The Movies Dataset stores its nested columns (`genres`, `cast`, `belongs_to_collection`, ...)
//! as Python literals, not JSON: single-quoted strings, `None`/`True`/`False`, and a string
//! holding an apostrophe written in double quotes (`{'name': "Lion's Gate", 'id': 1}`).
//!
//! Two ways in, one recursive descent parser underneath:
//! - [`parse`] returns a [`Value`] tree that borrows the input: a string without escapes is a
//!   `Cow::Borrowed` slice of the source, only strings with escapes allocate.
//! - [`Document::parse`] is the hot path for many cells in a row: the tree is stored flat in
//!   the document's reusable buffers (16-byte `Copy` nodes, strings as offsets into the input
//!   or into one shared buffer for decoded escapes) and read through [`Lit`] views. After the
//!   first few cells it allocates nothing and never walks a tree to free it.
//!
//! Nesting is limited ([`DEFAULT_MAX_DEPTH`]) so hostile input returns an error instead of
//! overflowing the stack.
//!
//! Supported: dicts, lists, tuples, sets, strings (single, double and triple quotes, `r`/`u`
//! prefixes, implicit concatenation, the escapes `\\ \' \" \a \b \f \n \r \t \v \ooo \xhh
//! \uXXXX \UXXXXXXXX` and line continuation; unknown escapes are kept literally as Python
//! does), ints (decimal, `0x`, `0o`, `0b`, `_` separators, arbitrary size), floats, a leading
//! `-`/`+` on numbers, `None`, `True`, `False`, and `#` comments. Not supported (an error):
//! bytes literals, complex numbers, `\N{...}` escapes, escapes that name a lone surrogate.

use std::borrow::Cow;
use std::fmt;

/// How deep containers may nest before parsing gives up with an error.
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// One parsed Python value, borrowing from the source text where it can.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer too large for `i64`, kept as its source text (sign, digits, prefix, `_`).
    BigInt(Cow<'a, str>),
    /// A float (`1.5`, `1e-05`, `.5`; `1e999` is infinity as in Python).
    Float(f64),
    /// A string, borrowed from the input unless it held escapes or was concatenated.
    Str(Cow<'a, str>),
    /// `[...]`.
    List(Vec<Value<'a>>),
    /// `(...)`; `(x)` is just `x`, `(x,)` is a one-element tuple.
    Tuple(Vec<Value<'a>>),
    /// `{a, b}` with duplicates removed (first one kept).
    Set(Vec<Value<'a>>),
    /// `{k: v, ...}` in source order; on a repeated key, [`Value::get`] returns the last value
    /// as Python would.
    Dict(Vec<(Value<'a>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The string, if this is a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is a [`Value::Int`] (a `bool` is not an integer here).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements, if this is a list or a tuple.
    pub fn as_seq(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The key/value pairs, if this is a dict.
    pub fn as_dict(&self) -> Option<&[(Value<'a>, Value<'a>)]> {
        match self {
            Value::Dict(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    /// Looks up a string key in a dict (the last occurrence wins, as in Python). `None` when
    /// this is not a dict or the key is absent.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        let pairs = self.as_dict()?;
        pairs
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    }
}

/// Why a literal could not be parsed, and where (byte offset into the input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiteralError {
    /// Byte offset of the problem in the input.
    pub offset: usize,
    /// A short description (a fixed text, so it can be counted).
    pub reason: &'static str,
}

impl fmt::Display for LiteralError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid Python literal at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for LiteralError {}

/// Parses one Python literal (surrounding whitespace allowed) with [`DEFAULT_MAX_DEPTH`].
pub fn parse(src: &str) -> Result<Value<'_>, LiteralError> {
    parse_with_max_depth(src, DEFAULT_MAX_DEPTH)
}

/// Parses one Python literal, refusing containers nested deeper than `max_depth`.
pub fn parse_with_max_depth(src: &str, max_depth: usize) -> Result<Value<'_>, LiteralError> {
    let mut doc = Document::with_max_depth(max_depth);
    let root = doc.parse_node(src)?;
    Ok(to_value(&doc, src, root))
}

/// Reusable buffers for parsing many literals one after the other (see the module docs).
#[derive(Debug, Clone)]
pub struct Document {
    /// Finished containers' children, contiguous per container (dict: key, value, key, ...).
    nodes: Vec<Node>,
    /// Values of the containers still open.
    stack: Vec<Node>,
    /// Decoded strings (those with escapes or concatenated).
    text: String,
    max_depth: usize,
    /// Whether a string of the current value may hold a NUL (the input has one, or an escape
    /// produced one): lets [`Lit::has_nul`] skip the search in the usual case.
    nul: bool,
}

impl Default for Document {
    fn default() -> Self {
        Document::new()
    }
}

impl Document {
    /// An empty document with [`DEFAULT_MAX_DEPTH`].
    pub fn new() -> Self {
        Document::with_max_depth(DEFAULT_MAX_DEPTH)
    }

    /// An empty document refusing containers nested deeper than `max_depth`.
    pub fn with_max_depth(max_depth: usize) -> Self {
        Document {
            nodes: Vec::new(),
            stack: Vec::new(),
            text: String::new(),
            max_depth,
            nul: false,
        }
    }

    /// Parses `src`, replacing what the document held, and returns a view of the root value.
    pub fn parse<'d>(&'d mut self, src: &'d str) -> Result<Lit<'d>, LiteralError> {
        let node = self.parse_node(src)?;
        Ok(Lit { doc: self, src, node })
    }

    fn parse_node(&mut self, src: &str) -> Result<Node, LiteralError> {
        self.nodes.clear();
        self.stack.clear();
        self.text.clear();
        self.nul = memchr::memchr(0, src.as_bytes()).is_some();
        if u32::try_from(src.len()).is_err() {
            return Err(LiteralError {
                offset: 0,
                reason: "literal larger than 4 GiB",
            });
        }
        let mut p = Parser {
            src,
            b: src.as_bytes(),
            pos: 0,
            depth: 0,
            max_depth: self.max_depth,
            nodes: &mut self.nodes,
            stack: &mut self.stack,
            text: &mut self.text,
            error: LiteralError { offset: 0, reason: "" },
        };
        let parsed = p.value().and_then(|()| {
            p.skip_ws();
            if p.pos == p.b.len() {
                Ok(())
            } else {
                Err(p.err("unexpected text after the value"))
            }
        });
        let error = p.error;
        self.nul |= self.text.contains('\0');
        match (parsed, self.stack.pop()) {
            (Ok(()), Some(root)) => Ok(root),
            _ => Err(error),
        }
    }
}

/// One value of the flat tree. Strings and big integers are offsets, not pointers, so the
/// buffers can be reused for the next input whatever its lifetime.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Source text of an integer beyond `i64`.
    BigInt {
        start: u32,
        len: u32,
    },
    /// A string borrowed from the source.
    Str {
        start: u32,
        len: u32,
    },
    /// A decoded string in `Document::text`.
    Text {
        start: u32,
        len: u32,
    },
    List {
        first: u32,
        len: u32,
    },
    Tuple {
        first: u32,
        len: u32,
    },
    Set {
        first: u32,
        len: u32,
    },
    /// `len` pairs at `nodes[first..first + 2 * len]`.
    Dict {
        first: u32,
        len: u32,
    },
}

fn range(start: u32, len: u32) -> std::ops::Range<usize> {
    start as usize..start as usize + len as usize
}

/// A value inside a parsed [`Document`]: cheap to copy, read with the accessors.
#[derive(Clone, Copy)]
pub struct Lit<'d> {
    doc: &'d Document,
    src: &'d str,
    node: Node,
}

impl fmt::Debug for Lit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_value(), f)
    }
}

impl<'d> Lit<'d> {
    fn at(self, node: Node) -> Lit<'d> {
        Lit { node, ..self }
    }

    /// Whether this is `None`.
    pub fn is_none(self) -> bool {
        matches!(self.node, Node::None)
    }

    /// The boolean, if this is `True` or `False`.
    pub fn as_bool(self) -> Option<bool> {
        match self.node {
            Node::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, if this is an integer that fits in `i64` (a bool is not an integer here).
    pub fn as_i64(self) -> Option<i64> {
        match self.node {
            Node::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The float, if this is a float literal.
    pub fn as_f64(self) -> Option<f64> {
        match self.node {
            Node::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The UTF-8 bytes of the string, if this is a string (no char-boundary checks: the
    /// fastest way to compare or copy it).
    #[inline]
    pub fn as_bytes(self) -> Option<&'d [u8]> {
        match self.node {
            Node::Str { start, len } => Some(&self.src.as_bytes()[range(start, len)]),
            Node::Text { start, len } => Some(&self.doc.text.as_bytes()[range(start, len)]),
            _ => None,
        }
    }

    /// Whether this is a string holding a NUL character (which PostgreSQL text cannot store).
    #[inline]
    pub fn has_nul(self) -> bool {
        self.doc.nul && self.as_bytes().is_some_and(|b| b.contains(&0))
    }

    /// The string, if this is a string.
    pub fn as_str(self) -> Option<&'d str> {
        match self.node {
            Node::Str { start, len } => Some(&self.src[range(start, len)]),
            Node::Text { start, len } => Some(&self.doc.text[range(start, len)]),
            _ => None,
        }
    }

    /// The elements, if this is a list or a tuple.
    pub fn items(self) -> Option<Items<'d>> {
        match self.node {
            Node::List { first, len } | Node::Tuple { first, len } => Some(Items {
                lit: self,
                nodes: self.doc.nodes[range(first, len)].iter(),
            }),
            _ => None,
        }
    }

    /// The key/value pairs in source order, if this is a dict.
    pub fn pairs(self) -> Option<Pairs<'d>> {
        match self.node {
            Node::Dict { first, len } => Some(Pairs {
                lit: self,
                nodes: self.doc.nodes[range(first, 2 * len)].chunks_exact(2),
            }),
            _ => None,
        }
    }

    /// Looks up a string key in a dict (the last occurrence wins, as in Python).
    pub fn get(self, key: &str) -> Option<Lit<'d>> {
        self.pairs()?
            .filter(|(k, _)| k.as_str() == Some(key))
            .last()
            .map(|(_, v)| v)
    }

    /// Picks several string keys of a dict in one pass (the last occurrence of each wins).
    /// `None` for each key when this is not a dict.
    pub fn fields<const N: usize>(self, keys: [&str; N]) -> [Option<Lit<'d>>; N] {
        let mut out = [None; N];
        if let Some(pairs) = self.pairs() {
            for (k, v) in pairs {
                if let Some(k) = k.as_bytes() {
                    if let Some(i) = keys.iter().position(|n| n.as_bytes() == k) {
                        out[i] = Some(v);
                    }
                }
            }
        }
        out
    }

    /// An owned-where-needed [`Value`] tree of this value.
    pub fn to_value(self) -> Value<'d> {
        match self.node {
            Node::Text { start, len } => Value::Str(Cow::Borrowed(&self.doc.text[range(start, len)])),
            _ => to_value(self.doc, self.src, self.node),
        }
    }
}

/// Converts a node; strings from the source stay borrowed from it.
fn to_value<'s>(doc: &Document, src: &'s str, node: Node) -> Value<'s> {
    let seq = |first: u32, len: u32| -> Vec<Value<'s>> {
        doc.nodes[range(first, len)]
            .iter()
            .map(|n| to_value(doc, src, *n))
            .collect()
    };
    match node {
        Node::None => Value::None,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::Int(i),
        Node::Float(f) => Value::Float(f),
        Node::BigInt { start, len } => Value::BigInt(Cow::Borrowed(&src[range(start, len)])),
        Node::Str { start, len } => Value::Str(Cow::Borrowed(&src[range(start, len)])),
        Node::Text { start, len } => Value::Str(Cow::Owned(doc.text[range(start, len)].to_string())),
        Node::List { first, len } => Value::List(seq(first, len)),
        Node::Tuple { first, len } => Value::Tuple(seq(first, len)),
        Node::Set { first, len } => Value::Set(seq(first, len)),
        Node::Dict { first, len } => Value::Dict(
            doc.nodes[range(first, 2 * len)]
                .chunks_exact(2)
                .map(|kv| (to_value(doc, src, kv[0]), to_value(doc, src, kv[1])))
                .collect(),
        ),
    }
}

/// The elements of a list or tuple ([`Lit::items`]).
#[derive(Clone)]
pub struct Items<'d> {
    lit: Lit<'d>,
    nodes: std::slice::Iter<'d, Node>,
}

impl<'d> Iterator for Items<'d> {
    type Item = Lit<'d>;
    fn next(&mut self) -> Option<Lit<'d>> {
        self.nodes.next().map(|n| self.lit.at(*n))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.nodes.size_hint()
    }
}

impl ExactSizeIterator for Items<'_> {}

/// The key/value pairs of a dict ([`Lit::pairs`]).
#[derive(Clone)]
pub struct Pairs<'d> {
    lit: Lit<'d>,
    nodes: std::slice::ChunksExact<'d, Node>,
}

impl<'d> Iterator for Pairs<'d> {
    type Item = (Lit<'d>, Lit<'d>);
    fn next(&mut self) -> Option<(Lit<'d>, Lit<'d>)> {
        self.nodes.next().map(|kv| (self.lit.at(kv[0]), self.lit.at(kv[1])))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.nodes.size_hint()
    }
}

impl ExactSizeIterator for Pairs<'_> {}

// ---------------------------------------------------------------------------------------------
// The parser

/// A failed parse; the details are in `Parser::error`.
struct Fail;

type PResult<T> = Result<T, Fail>;

/// Values are built on an explicit stack rather than returned up the recursion: a container's
/// children sit at the top of the stack and are copied to `nodes` in one piece when it closes.
struct Parser<'p> {
    src: &'p str,
    b: &'p [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
    nodes: &'p mut Vec<Node>,
    stack: &'p mut Vec<Node>,
    text: &'p mut String,
    error: LiteralError,
}

#[inline]
fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Offset of the first `a`, `b` or `c` in `hay`, eight bytes at a time.
#[inline]
fn find3(hay: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let (pa, pb, pc) = (LO * u64::from(a), LO * u64::from(b), LO * u64::from(c));
    let mut i = 0;
    let mut chunks = hay.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let x = u64::from_le_bytes(w);
        let m = has_zero(x ^ pa) | has_zero(x ^ pb) | has_zero(x ^ pc);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x == a || x == b || x == c)
        .map(|p| i + p)
}

impl Parser<'_> {
    #[cold]
    fn err(&mut self, reason: &'static str) -> Fail {
        self.err_at(self.pos, reason)
    }

    #[cold]
    fn err_at(&mut self, offset: usize, reason: &'static str) -> Fail {
        self.error = LiteralError { offset, reason };
        Fail
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.pos += 1,
                b'#' => {
                    while let Some(&c) = self.b.get(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                b'\\' if matches!(self.b.get(self.pos + 1), Some(b'\n')) => self.pos += 2,
                b'\\' if self.b[self.pos + 1..].starts_with(b"\r\n") => self.pos += 3,
                _ => break,
            }
        }
    }

    /// Parses one value and pushes it on the stack.
    fn value(&mut self) -> PResult<()> {
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Err(self.err("expected a value, found the end of the input"));
        };
        match c {
            b'\'' | b'"' => self.strings(),
            b'{' => self.brace(),
            b'[' => self.list(),
            b'(' => self.paren(),
            b'-' | b'+' => {
                let start = self.pos;
                self.pos += 1;
                self.skip_ws();
                match self.peek() {
                    Some(d) if d.is_ascii_digit() || d == b'.' => self.number(start),
                    _ => Err(self.err("a sign must be followed by a number")),
                }
            }
            b'0'..=b'9' | b'.' => self.number(self.pos),
            _ if is_ident_byte(c) => self.word(),
            _ => Err(self.err("unexpected character")),
        }
    }

    /// `None`, `True`, `False` or a prefixed string (`r'...'`, `u'...'`).
    fn word(&mut self) -> PResult<()> {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_byte) {
            self.pos += 1;
        }
        let word = &self.b[start..self.pos];
        if matches!(self.peek(), Some(b'\'' | b'"')) {
            self.pos = start;
            return match word {
                b"r" | b"R" | b"u" | b"U" => self.strings(),
                b"b" | b"B" | b"br" | b"rb" | b"Br" | b"bR" | b"BR" | b"rB" | b"Rb" | b"RB" => {
                    Err(self.err("bytes literals are not supported"))
                }
                _ => Err(self.err("unknown string prefix")),
            };
        }
        let v = match word {
            b"None" => Node::None,
            b"True" => Node::Bool(true),
            b"False" => Node::Bool(false),
            _ => {
                self.pos = start;
                return Err(self.err("unknown name (only None, True and False are literals)"));
            }
        };
        self.stack.push(v);
        Ok(())
    }

    fn enter(&mut self) -> PResult<()> {
        if self.depth >= self.max_depth {
            return Err(self.err("nesting too deep"));
        }
        self.depth += 1;
        self.pos += 1;
        Ok(())
    }

    /// After an element: consumes `,` (returns false) or the closing byte (returns true).
    #[inline]
    fn sep_or_close(&mut self, close: u8) -> PResult<bool> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                    return Ok(true);
                }
                Ok(false)
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Err(self.err("expected ',' or a closing bracket")),
            None => Err(self.err("unterminated container")),
        }
    }

    /// Moves the stack values above `base` to `nodes`; returns where they start and how many.
    #[inline]
    fn close(&mut self, base: usize) -> (u32, u32) {
        let first = self.nodes.len() as u32;
        let len = (self.stack.len() - base) as u32;
        self.nodes.extend_from_slice(&self.stack[base..]);
        self.stack.truncate(base);
        self.depth -= 1;
        (first, len)
    }

    fn list(&mut self) -> PResult<()> {
        self.enter()?;
        let base = self.stack.len();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.value()?;
                if self.sep_or_close(b']')? {
                    break;
                }
            }
        }
        let (first, len) = self.close(base);
        self.stack.push(Node::List { first, len });
        Ok(())
    }

    fn paren(&mut self) -> PResult<()> {
        self.enter()?;
        let base = self.stack.len();
        self.skip_ws();
        if self.peek() != Some(b')') {
            self.value()?;
            self.skip_ws();
            if self.peek() == Some(b')') {
                // `(x)` is x, not a tuple: leave it on the stack.
                self.pos += 1;
                self.depth -= 1;
                return Ok(());
            }
            if !self.sep_or_close(b')')? {
                loop {
                    self.value()?;
                    if self.sep_or_close(b')')? {
                        break;
                    }
                }
            }
        } else {
            self.pos += 1;
        }
        let (first, len) = self.close(base);
        self.stack.push(Node::Tuple { first, len });
        Ok(())
    }

    fn hashable(&self, n: Node) -> bool {
        match n {
            Node::List { .. } | Node::Set { .. } | Node::Dict { .. } => false,
            Node::Tuple { first, len } => self.nodes[range(first, len)].iter().all(|c| self.hashable(*c)),
            _ => true,
        }
    }

    /// Checks that the value on top of the stack can be a dict key or set element.
    fn check_hashable(&mut self, at: usize, what: &'static str) -> PResult<()> {
        match self.stack.last() {
            Some(&n) if self.hashable(n) => Ok(()),
            _ => Err(self.err_at(at, what)),
        }
    }

    fn node_str(&self, n: Node) -> Option<&str> {
        match n {
            Node::Str { start, len } => Some(&self.src[range(start, len)]),
            Node::Text { start, len } => Some(&self.text[range(start, len)]),
            _ => None,
        }
    }

    /// Python equality of two hashable values (for set elements).
    fn same(&self, a: Node, b: Node) -> bool {
        if let (Some(x), Some(y)) = (self.node_str(a), self.node_str(b)) {
            return x == y;
        }
        let num = |n: Node| match n {
            Node::Bool(b) => Some(f64::from(u8::from(b))),
            Node::Int(i) => Some(i as f64),
            Node::Float(f) => Some(f),
            _ => None,
        };
        match (a, b) {
            (Node::Int(x), Node::Int(y)) => x == y,
            (Node::None, Node::None) => true,
            (Node::BigInt { start: s1, len: l1 }, Node::BigInt { start: s2, len: l2 }) => {
                self.src[range(s1, l1)] == self.src[range(s2, l2)]
            }
            (Node::Tuple { first: f1, len: l1 }, Node::Tuple { first: f2, len: l2 }) => {
                l1 == l2
                    && (0..l1 as usize).all(|i| self.same(self.nodes[f1 as usize + i], self.nodes[f2 as usize + i]))
            }
            _ => matches!((num(a), num(b)), (Some(x), Some(y)) if x == y),
        }
    }

    fn brace(&mut self) -> PResult<()> {
        self.enter()?;
        let base = self.stack.len();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            let (first, _) = self.close(base);
            self.stack.push(Node::Dict { first, len: 0 });
            return Ok(());
        }
        let mut at = self.pos;
        self.value()?;
        self.skip_ws();
        if self.peek() == Some(b':') {
            loop {
                self.check_hashable(at, "unhashable dict key")?;
                self.skip_ws();
                if self.peek() != Some(b':') {
                    return Err(self.err("expected ':' in a dict"));
                }
                self.pos += 1;
                self.value()?;
                if self.sep_or_close(b'}')? {
                    break;
                }
                self.skip_ws();
                at = self.pos;
                self.value()?;
            }
            let (first, len) = self.close(base);
            self.stack.push(Node::Dict { first, len: len / 2 });
        } else {
            loop {
                self.check_hashable(at, "unhashable set element")?;
                // Python keeps the first of equal elements.
                let top = self.stack.len() - 1;
                let new = self.stack[top];
                if self.stack[base..top].iter().any(|&old| self.same(old, new)) {
                    self.stack.pop();
                }
                if self.sep_or_close(b'}')? {
                    break;
                }
                self.skip_ws();
                at = self.pos;
                self.value()?;
            }
            let (first, len) = self.close(base);
            self.stack.push(Node::Set { first, len });
        }
        Ok(())
    }

    /// One or more adjacent string literals (`'a' "b"` is `'ab'`), pushed as one string.
    fn strings(&mut self) -> PResult<()> {
        let first = self.string()?;
        let mut joined: Option<usize> = None;
        loop {
            let save = self.pos;
            self.skip_ws();
            let next_is_string = match self.peek() {
                Some(b'\'' | b'"') => true,
                Some(b'r' | b'R' | b'u' | b'U') => matches!(self.b.get(self.pos + 1), Some(b'\'' | b'"')),
                _ => false,
            };
            if !next_is_string {
                self.pos = save;
                let node = match joined {
                    None => first,
                    Some(start) => Node::Text {
                        start: start as u32,
                        len: (self.text.len() - start) as u32,
                    },
                };
                self.stack.push(node);
                return Ok(());
            }
            if joined.is_none() {
                // Gather the pieces at the end of `text`.
                let start = match first {
                    Node::Text { start, .. } => start as usize,
                    _ => {
                        let start = self.text.len();
                        if let Node::Str { start: s, len } = first {
                            self.text.push_str(&self.src[range(s, len)]);
                        }
                        start
                    }
                };
                joined = Some(start);
            }
            // A decoded piece lands right after the previous ones: already in place.
            if let Node::Str { start, len } = self.string()? {
                self.text.push_str(&self.src[range(start, len)]);
            }
        }
    }

    /// One string literal with an optional `r`/`u` prefix, at `self.pos`.
    fn string(&mut self) -> PResult<Node> {
        let mut raw = false;
        match self.peek() {
            Some(b'r' | b'R') => {
                raw = true;
                self.pos += 1;
            }
            Some(b'u' | b'U') => self.pos += 1,
            _ => {}
        }
        let quote = self.b[self.pos];
        let triple = self.b.get(self.pos + 1) == Some(&quote) && self.b.get(self.pos + 2) == Some(&quote);
        let open = self.pos;
        self.pos += if triple { 3 } else { 1 };
        let start = self.pos;

        // Fast path: no backslash before the closing quote, borrow the input.
        let mut i = start;
        loop {
            let Some(off) = find3(&self.b[i..], quote, b'\\', b'\n') else {
                self.pos = open;
                return Err(self.err("unterminated string"));
            };
            i += off;
            let c = self.b[i];
            if c == quote {
                if !triple {
                    self.pos = i + 1;
                    return Ok(Node::Str {
                        start: start as u32,
                        len: (i - start) as u32,
                    });
                }
                if self.b.get(i + 1) == Some(&quote) && self.b.get(i + 2) == Some(&quote) {
                    self.pos = i + 3;
                    return Ok(Node::Str {
                        start: start as u32,
                        len: (i - start) as u32,
                    });
                }
            } else if c == b'\\' {
                break;
            } else if !triple {
                self.pos = i;
                return Err(self.err("line break in a single-quoted string"));
            }
            i += 1;
        }

        // Slow path: decode escapes into `text`.
        let out_start = self.text.len();
        self.text.push_str(&self.src[start..i]);
        self.pos = i;
        loop {
            let Some(&c) = self.b.get(self.pos) else {
                self.pos = open;
                return Err(self.err("unterminated string"));
            };
            if c == quote {
                let closes =
                    !triple || (self.b.get(self.pos + 1) == Some(&quote) && self.b.get(self.pos + 2) == Some(&quote));
                if closes {
                    self.pos += if triple { 3 } else { 1 };
                    let len = self.text.len() - out_start;
                    return Ok(Node::Text {
                        start: out_start as u32,
                        len: len as u32,
                    });
                }
                self.text.push(quote as char);
                self.pos += 1;
            } else if c == b'\\' {
                if raw {
                    // In raw strings a backslash only stops the next quote from closing.
                    let Some(next) = self.src[self.pos + 1..].chars().next() else {
                        self.pos = open;
                        return Err(self.err("unterminated string"));
                    };
                    self.text.push('\\');
                    self.text.push(next);
                    self.pos += 1 + next.len_utf8();
                } else {
                    self.escape()?;
                }
            } else if c == b'\n' && !triple {
                return Err(self.err("line break in a single-quoted string"));
            } else {
                // Copy a run of ordinary bytes at once (stops at ASCII, so slicing is safe).
                let run = &self.b[self.pos..];
                let end = find3(run, quote, b'\\', b'\n').unwrap_or(run.len());
                self.text.push_str(&self.src[self.pos..self.pos + end]);
                self.pos += end;
            }
        }
    }

    /// Decodes the escape sequence at `self.pos` (which holds the backslash) into `text`.
    fn escape(&mut self) -> PResult<()> {
        let at = self.pos;
        let Some(&e) = self.b.get(at + 1) else {
            return Err(self.err("unterminated string"));
        };
        self.pos = at + 2;
        let simple = match e {
            b'\n' => Some(None),
            b'\\' => Some(Some('\\')),
            b'\'' => Some(Some('\'')),
            b'"' => Some(Some('"')),
            b'a' => Some(Some('\x07')),
            b'b' => Some(Some('\x08')),
            b'f' => Some(Some('\x0c')),
            b'n' => Some(Some('\n')),
            b'r' => Some(Some('\r')),
            b't' => Some(Some('\t')),
            b'v' => Some(Some('\x0b')),
            _ => None,
        };
        if let Some(ch) = simple {
            if let Some(ch) = ch {
                self.text.push(ch);
            }
            return Ok(());
        }
        match e {
            b'\r' => {
                // Line continuation written with CRLF.
                if self.peek() == Some(b'\n') {
                    self.pos += 1;
                }
                Ok(())
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                self.push_code(v, at)
            }
            b'x' => self.hex_escape(2, at),
            b'u' => self.hex_escape(4, at),
            b'U' => self.hex_escape(8, at),
            b'N' => Err(self.err_at(at, "\\N{...} escapes are not supported")),
            _ => {
                // Unknown escape: Python keeps the backslash and the character.
                let ch = self.src[at + 1..].chars().next().unwrap_or('\\');
                self.text.push('\\');
                self.text.push(ch);
                self.pos = at + 1 + ch.len_utf8();
                Ok(())
            }
        }
    }

    fn hex_escape(&mut self, digits: usize, at: usize) -> PResult<()> {
        let hex = self.b.get(self.pos..self.pos + digits);
        let Some(hex) = hex.filter(|h| h.iter().all(u8::is_ascii_hexdigit)) else {
            return Err(self.err_at(at, "truncated \\x, \\u or \\U escape"));
        };
        // At most 8 hex digits: fits in u32.
        let v = hex
            .iter()
            .fold(0u32, |v, &h| (v << 4) | (h as char).to_digit(16).unwrap_or(0));
        self.pos += digits;
        self.push_code(v, at)
    }

    fn push_code(&mut self, v: u32, at: usize) -> PResult<()> {
        match char::from_u32(v) {
            Some(ch) => {
                self.text.push(ch);
                Ok(())
            }
            None if (0xD800..0xE000).contains(&v) => Err(self.err_at(at, "escape names a lone surrogate")),
            None => Err(self.err_at(at, "escape names a code point above U+10FFFF")),
        }
    }

    /// A number starting at `start` (which may hold a sign; `self.pos` is at the first digit
    /// or dot); pushes it.
    fn number(&mut self, start: usize) -> PResult<()> {
        let negative = self.b[start] == b'-';
        let body = self.pos;
        let b = self.b;
        // digit (["_"] digit)*: whether any digit was read; Err holds a misplaced '_'.
        let digits_run = |p: &mut usize, ok: fn(u8) -> bool| -> Result<bool, usize> {
            let mut any = false;
            while let Some(&c) = b.get(*p) {
                if ok(c) {
                    any = true;
                    *p += 1;
                } else if c == b'_' && any && b.get(*p + 1).is_some_and(|&d| ok(d)) {
                    *p += 1;
                } else if c == b'_' {
                    return Err(*p);
                } else {
                    break;
                }
            }
            Ok(any)
        };
        let big = |end: usize| Node::BigInt {
            start: start as u32,
            len: (end - start) as u32,
        };

        // Prefixed integers.
        if b[body] == b'0' {
            let radix = match b.get(body + 1) {
                Some(b'x' | b'X') => 16,
                Some(b'o' | b'O') => 8,
                Some(b'b' | b'B') => 2,
                _ => 0,
            };
            if radix != 0 {
                let mut p = body + 2;
                if b.get(p) == Some(&b'_') {
                    p += 1;
                }
                let ok: fn(u8) -> bool = match radix {
                    16 => |c: u8| c.is_ascii_hexdigit(),
                    8 => |c: u8| (b'0'..=b'7').contains(&c),
                    _ => |c: u8| c == b'0' || c == b'1',
                };
                let digits_start = p;
                let any = digits_run(&mut p, ok).map_err(|at| self.err_at(at, MISPLACED))?;
                self.pos = p;
                if !any {
                    return Err(self.err("prefixed integer without digits"));
                }
                self.end_of_number()?;
                let mut m: Option<u64> = Some(0);
                for &c in &b[digits_start..p] {
                    if c != b'_' {
                        let d = u64::from((c as char).to_digit(16).unwrap_or(0));
                        m = m.and_then(|m| m.checked_mul(radix)).and_then(|m| m.checked_add(d));
                    }
                }
                let node = m.and_then(|m| signed(negative, m)).unwrap_or_else(|| big(p));
                self.stack.push(node);
                return Ok(());
            }
        }

        let mut p = body;
        let int_digits = digits_run(&mut p, |c| c.is_ascii_digit()).map_err(|at| self.err_at(at, MISPLACED))?;
        let mut is_float = false;
        if b.get(p) == Some(&b'.') {
            is_float = true;
            p += 1;
            let frac = b.get(p).is_some_and(u8::is_ascii_digit)
                && digits_run(&mut p, |c| c.is_ascii_digit()).map_err(|at| self.err_at(at, MISPLACED))?;
            if !int_digits && !frac {
                self.pos = p;
                return Err(self.err("a lone '.' is not a number"));
            }
        }
        if matches!(b.get(p), Some(b'e' | b'E')) {
            let mut q = p + 1;
            if matches!(b.get(q), Some(b'+' | b'-')) {
                q += 1;
            }
            if !b.get(q).is_some_and(u8::is_ascii_digit) {
                self.pos = p;
                return Err(self.err("exponent without digits"));
            }
            digits_run(&mut q, |c| c.is_ascii_digit()).map_err(|at| self.err_at(at, MISPLACED))?;
            p = q;
            is_float = true;
        }
        self.pos = p;
        self.end_of_number()?;
        let text = &self.src[body..p];
        if is_float {
            let parsed = if text.contains('_') {
                text.replace('_', "").parse::<f64>()
            } else {
                text.parse::<f64>()
            };
            let Ok(v) = parsed else {
                return Err(self.err_at(body, "bad float"));
            };
            self.stack.push(Node::Float(if negative { -v } else { v }));
            return Ok(());
        }
        // Decimal integer: Python forbids leading zeros ("007") except for zero itself.
        if text.len() > 1 && text.starts_with('0') && text.bytes().any(|c| c != b'0' && c != b'_') {
            return Err(self.err_at(body, "leading zeros in a decimal integer"));
        }
        let mut m: Option<u64> = Some(0);
        for c in text.bytes() {
            if c != b'_' {
                m = m
                    .and_then(|m| m.checked_mul(10))
                    .and_then(|m| m.checked_add(u64::from(c - b'0')));
            }
        }
        let node = m.and_then(|m| signed(negative, m)).unwrap_or_else(|| big(p));
        self.stack.push(node);
        Ok(())
    }

    fn end_of_number(&mut self) -> PResult<()> {
        match self.peek() {
            Some(b'j' | b'J') => Err(self.err("complex numbers are not supported")),
            Some(c) if is_ident_byte(c) || c == b'.' => Err(self.err("invalid character after a number")),
            _ => Ok(()),
        }
    }
}

const MISPLACED: &str = "misplaced '_' in a number";

fn signed(negative: bool, m: u64) -> Option<Node> {
    if negative {
        (m <= i64::MAX as u64 + 1).then(|| Node::Int((m as i64).wrapping_neg()))
    } else {
        i64::try_from(m).ok().map(Node::Int)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find3_matches_a_plain_search() {
        let hay = b"abcdefghijklmnopqrstuvwxyz'\\\n0123456789";
        for start in 0..hay.len() {
            for (a, b, c) in [
                (b'\'', b'\\', b'\n'),
                (b'z', b'q', b'~'),
                (b'~', b'~', b'~'),
                (b'a', b'9', b'0'),
            ] {
                let want = hay[start..].iter().position(|&x| x == a || x == b || x == c);
                assert_eq!(find3(&hay[start..], a, b, c), want, "{start} {a} {b} {c}");
            }
        }
        // High bytes must not give false matches.
        assert_eq!(find3("ééééééééé'".as_bytes(), b'\'', b'\\', b'\n'), Some(18));
    }

    #[test]
    fn document_is_reusable() {
        let mut doc = Document::new();
        for (src, want) in [("[1, 'a']", 2), ("{'x': 'y\\n'}", 1), ("[]", 0)] {
            let root = doc.parse(src).unwrap();
            let n = root.items().map(|i| i.len()).or_else(|| root.pairs().map(|p| p.len()));
            assert_eq!(n, Some(want));
        }
        let root = doc.parse("{'id': 1, 'name': \"Lion's \\x41\", 'id': 2}").unwrap();
        assert_eq!(root.get("id").and_then(Lit::as_i64), Some(2));
        assert_eq!(root.get("name").and_then(Lit::as_str), Some("Lion's A"));
        let [id, name, nope] = root.fields(["id", "name", "nope"]);
        assert_eq!(
            (id.and_then(Lit::as_i64), name.and_then(Lit::as_str)),
            (Some(2), Some("Lion's A"))
        );
        assert!(nope.is_none());
        assert!(doc.parse("[1,").is_err());
        assert!(doc.parse("None").unwrap().is_none());
    }
}
