//! Text building blocks of the generator: CSV quoting as Python's `csv` module writes it
//! (`QUOTE_MINIMAL`), Python `repr()` of strings, number formats of the dataset, and made-up
//! words and names (our own vocabulary and syllables, no row of the real dataset).

use crate::rng::Rng;

/// Appends `s` as one CSV field: quoted (with `"` doubled) only when it holds a comma, a quote
/// or a line break, as Python's `csv.writer` and pandas' `to_csv` do.
pub fn csv_field(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends Python's `repr()` of the string `s`: single quotes unless the text holds an
/// apostrophe and no double quote (`"Lion's Gate"`); backslash escapes for the quote in use, a
/// backslash, line breaks, tabs and the non-printable no-break space.
pub fn py_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{a0}' => out.push_str("\\xa0"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Appends a decimal integer.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

pub fn u64_str(n: u64) -> String {
    let mut v = Vec::with_capacity(20);
    push_u64(&mut v, n);
    String::from_utf8(v).expect("digits")
}

/// `repr(float)` of a value given in millionths, as pandas wrote popularity: `21.946943`,
/// `11.7129`, `2.0`, and below 1e-4 Python's exponent form: `8.2e-05`, `6e-06`.
pub fn micro_float(micro: u64) -> String {
    if micro == 0 {
        return "0.0".into();
    }
    if micro < 100 {
        // micro * 1e-6 with 1 or 2 significant digits.
        let (mant, exp) = if micro >= 10 { (micro, 5) } else { (micro, 6) };
        let digits = u64_str(mant);
        let (head, tail) = digits.split_at(1);
        let tail = tail.trim_end_matches('0');
        return if tail.is_empty() {
            format!("{head}e-{exp:02}")
        } else {
            format!("{head}.{tail}e-{exp:02}")
        };
    }
    let int = micro / 1_000_000;
    let frac = format!("{:06}", micro % 1_000_000);
    let frac = frac.trim_end_matches('0');
    format!("{int}.{}", if frac.is_empty() { "0" } else { frac })
}

const BASE62: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `/` + 27 base-62 characters + `.jpg`, the shape of TMDB image paths.
pub fn image_path(rng: &mut Rng) -> String {
    let mut s = String::with_capacity(32);
    s.push('/');
    for _ in 0..27 {
        s.push(BASE62[rng.below(62) as usize] as char);
    }
    s.push_str(".jpg");
    s
}

/// 24 lower-case hex digits (TMDB credit ids).
pub fn hex24(rng: &mut Rng) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64() >> 32;
    format!("{a:016x}{b:08x}")
}

/// Our own vocabulary for overviews, taglines, titles and keywords.
pub const WORDS: &[&str] = &[
    "a",
    "the",
    "of",
    "and",
    "to",
    "in",
    "his",
    "her",
    "their",
    "with",
    "for",
    "on",
    "from",
    "by",
    "after",
    "when",
    "young",
    "old",
    "small",
    "last",
    "first",
    "new",
    "lost",
    "secret",
    "dark",
    "bright",
    "quiet",
    "wild",
    "broken",
    "golden",
    "silver",
    "hidden",
    "strange",
    "little",
    "great",
    "long",
    "cold",
    "warm",
    "deep",
    "distant",
    "final",
    "man",
    "woman",
    "girl",
    "boy",
    "father",
    "mother",
    "brother",
    "sister",
    "friend",
    "family",
    "stranger",
    "king",
    "queen",
    "soldier",
    "doctor",
    "detective",
    "teacher",
    "farmer",
    "pilot",
    "singer",
    "thief",
    "captain",
    "ghost",
    "town",
    "city",
    "village",
    "river",
    "island",
    "mountain",
    "desert",
    "forest",
    "house",
    "school",
    "hotel",
    "ship",
    "train",
    "road",
    "bridge",
    "garden",
    "kingdom",
    "planet",
    "station",
    "harbor",
    "valley",
    "border",
    "finds",
    "loses",
    "meets",
    "follows",
    "returns",
    "discovers",
    "escapes",
    "fights",
    "searches",
    "leaves",
    "joins",
    "saves",
    "hides",
    "chases",
    "builds",
    "falls",
    "wins",
    "learns",
    "tries",
    "decides",
    "travels",
    "love",
    "war",
    "money",
    "power",
    "revenge",
    "truth",
    "memory",
    "fear",
    "hope",
    "dream",
    "night",
    "summer",
    "winter",
    "morning",
    "storm",
    "fire",
    "water",
    "shadow",
    "light",
    "music",
    "game",
    "story",
    "journey",
    "murder",
    "heist",
    "wedding",
    "funeral",
    "election",
    "trial",
    "contest",
    "festival",
    "treasure",
    "letter",
    "years",
    "days",
    "weeks",
    "life",
    "world",
    "time",
    "home",
    "heart",
    "name",
    "past",
    "future",
    "way",
    "together",
    "alone",
    "again",
    "forever",
    "never",
    "always",
    "soon",
    "finally",
    "suddenly",
    "slowly",
];

/// Capitalised words for titles.
pub fn title_case(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A sentence of `n` vocabulary words, capitalised, with an occasional comma.
pub fn sentence(rng: &mut Rng, n: usize, out: &mut String) {
    for i in 0..n {
        let w = rng.pick(WORDS);
        if i == 0 {
            out.push_str(&title_case(w));
        } else {
            out.push(' ');
            out.push_str(w);
        }
        if i + 1 < n && i > 1 && rng.chance(0.06) {
            out.push(',');
        }
    }
    out.push('.');
}

const ONSETS: &[&str] = &[
    "b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "r", "s", "st", "sh", "t",
    "tr", "v", "w", "z", "",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ie", "ou", "y"];
const CODAS: &[&str] = &["", "", "n", "r", "l", "s", "th", "ck", "m", "nd", "rt", "x"];
const ACCENTED: &[&str] = &["é", "è", "ë", "ö", "ü", "å", "ø", "á", "í", "ñ", "ç", "ł", "ş", "ž"];

/// A made-up capitalised name of 1-3 syllables; `utf8` sprinkles an accented letter in.
pub fn made_up_name(rng: &mut Rng, utf8: bool) -> String {
    let syllables = *rng.weighted(&[(35, 1), (50, 2), (15, 3)]);
    let mut s = String::new();
    for _ in 0..syllables {
        s.push_str(rng.pick(ONSETS));
        if utf8 && rng.chance(0.4) {
            s.push_str(rng.pick(ACCENTED));
        } else {
            s.push_str(rng.pick(VOWELS));
        }
        s.push_str(rng.pick(CODAS));
    }
    title_case(&s)
}

/// A person's full name, derived from the person's key so every mention agrees.
pub fn person_name(seed: u64, key: u64) -> String {
    let mut r = Rng::derive(seed, 0x7e2, key);
    let utf8 = r.chance(0.06);
    let first = made_up_name(&mut r, utf8);
    let last = made_up_name(&mut r, utf8);
    let x = r.below(1000);
    match x {
        0..=14 => format!("{first} O'{last}"),
        15..=17 => format!("{first} \"{}\" {last}", made_up_name(&mut r, false)),
        18..=19 => format!("{first} \"{}\" D'{last}", made_up_name(&mut r, false)),
        20..=24 => format!("{first} {}. {last}", (b'A' + r.below(26) as u8) as char),
        25..=29 => format!("{} {last}", made_up_name(&mut r, false)),
        30 => {
            let cjk = ['金', '李', '王', '山', '田', '中', '村', '明', '美', '子'];
            (0..3).map(|_| r.pick(&cjk)).collect()
        }
        _ => format!("{first} {last}"),
    }
}

/// A company or collection name derived from its key.
pub fn org_name(seed: u64, stream: u64, key: u64, suffixes: &[&str]) -> String {
    let mut r = Rng::derive(seed, stream, key);
    let base = match r.below(100) {
        0..=3 => format!("{}'s {}", made_up_name(&mut r, false), title_case(r.pick(WORDS))),
        4..=7 => made_up_name(&mut r, true),
        8..=9 => format!("{} & {}", made_up_name(&mut r, false), made_up_name(&mut r, false)),
        10 => format!("{}, {}", made_up_name(&mut r, false), made_up_name(&mut r, false)),
        _ => format!("{} {}", title_case(r.pick(WORDS)), made_up_name(&mut r, false)),
    };
    format!("{base} {}", r.pick(suffixes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_of_strings() {
        let r = |s: &str| {
            let mut o = String::new();
            py_str(&mut o, s);
            o
        };
        assert_eq!(r("Action"), "'Action'");
        assert_eq!(r("Lion's Gate"), "\"Lion's Gate\"");
        assert_eq!(r("Say \"hi\""), "'Say \"hi\"'");
        assert_eq!(r("Bob \"B\" O'Neil"), "'Bob \"B\" O\\'Neil'");
        assert_eq!(r("a\u{a0}b\\"), "'a\\xa0b\\\\'");
    }

    #[test]
    fn csv_quoting() {
        let f = |s: &str| {
            let mut o = Vec::new();
            csv_field(&mut o, s);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(f("[]"), "[]");
        assert_eq!(f("a, b"), "\"a, b\"");
        assert_eq!(f("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(f("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn float_formats() {
        assert_eq!(micro_float(21_946_943), "21.946943");
        assert_eq!(micro_float(11_712_900), "11.7129");
        assert_eq!(micro_float(2_000_000), "2.0");
        assert_eq!(micro_float(82), "8.2e-05");
        assert_eq!(micro_float(6), "6e-06");
        assert_eq!(micro_float(10), "1e-05");
        assert_eq!(micro_float(100), "0.0001");
        assert_eq!(micro_float(0), "0.0");
    }
}
