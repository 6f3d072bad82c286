//! The Python-literal parser, data-driven: each case is source text and the expected value
//! rendered in a compact JSON-like form (strings quoted, tuples `(..)`, sets `{..}`).

use std::borrow::Cow;

use reelflow_clean::literal::{self, parse, parse_with_max_depth, Value};

fn render(v: &Value<'_>) -> String {
    fn seq(out: &mut String, open: char, close: char, items: &[Value<'_>]) {
        out.push(open);
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&render(x));
        }
        out.push(close);
    }
    let mut out = String::new();
    match v {
        Value::None => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::BigInt(t) => out.push_str(&format!("big:{t}")),
        Value::Float(f) => out.push_str(&format!("{f:?}")),
        Value::Str(s) => out.push_str(&format!("{s:?}")),
        Value::List(x) => seq(&mut out, '[', ']', x),
        Value::Tuple(x) => seq(&mut out, '(', ')', x),
        Value::Set(x) => seq(&mut out, '{', '}', x),
        Value::Dict(pairs) => {
            out.push('{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&render(k));
                out.push(':');
                out.push_str(&render(v));
            }
            out.push('}');
        }
    }
    out
}

#[test]
fn values() {
    let cases: &[(&str, &str)] = &[
        // scalars
        ("None", "None"),
        ("True", "True"),
        ("False", "False"),
        ("0", "0"),
        ("42", "42"),
        ("-7", "-7"),
        ("+7", "7"),
        ("- 7", "-7"),
        ("1_000", "1000"),
        ("0x1F", "31"),
        ("0o17", "15"),
        ("0b101", "5"),
        ("-0x10", "-16"),
        ("00", "0"),
        ("9223372036854775807", "9223372036854775807"),
        ("-9223372036854775808", "-9223372036854775808"),
        ("9223372036854775808", "big:9223372036854775808"),
        ("-99999999999999999999", "big:-99999999999999999999"),
        ("1.5", "1.5"),
        ("-0.25", "-0.25"),
        ("1e3", "1000.0"),
        ("8.2e-05", "8.2e-5"),
        (".5", "0.5"),
        ("5.", "5.0"),
        ("1_0.5", "10.5"),
        ("1e999", "inf"),
        ("007.5", "7.5"),
        // strings
        ("'abc'", "\"abc\""),
        ("\"abc\"", "\"abc\""),
        ("''", "\"\""),
        ("\"Lion's Gate\"", "\"Lion's Gate\""),
        ("'say \"hi\"'", "\"say \\\"hi\\\"\""),
        (r"'it\'s'", "\"it's\""),
        (r#""a\"b""#, "\"a\\\"b\""),
        (r"'a\\b'", "\"a\\\\b\""),
        (r"'a\nb\tc\rd'", "\"a\\nb\\tc\\rd\""),
        (r"'\x41\x7e'", "\"A~\""),
        (r"'\u00e9\U0001F600'", "\"é😀\""),
        (r"'\101\0'", "\"A\\0\""),
        (r"'\a\b\f\v'", "\"\\u{7}\\u{8}\\u{c}\\u{b}\""),
        (r"'\q\d'", "\"\\\\q\\\\d\""),
        (r"'\é'", "\"\\\\é\""),
        ("'a\\\nb'", "\"ab\""),
        ("'Pусский 摇啊摇'", "\"Pусский 摇啊摇\""),
        ("'a' 'b' \"c\"", "\"abc\""),
        ("r'\\d\\''", "\"\\\\d\\\\'\""),
        ("u'x'", "\"x\""),
        ("'''tri'ple\nline'''", "\"tri'ple\\nline\""),
        ("\"\"\"x\"\"\"", "\"x\""),
        // containers
        ("[]", "[]"),
        ("[1, 2, 3,]", "[1,2,3]"),
        ("()", "()"),
        ("(1)", "1"),
        ("(1,)", "(1)"),
        ("(1, 'a')", "(1,\"a\")"),
        ("{}", "{}"),
        ("{1, 2, 1}", "{1,2}"),
        ("{'a': 1, 'b': [None, True]}", "{\"a\":1,\"b\":[None,True]}"),
        ("{(1, 2): 'tuple key'}", "{(1,2):\"tuple key\"}"),
        (
            "{'name': \"Lion's Gate\", 'id': 1}",
            "{\"name\":\"Lion's Gate\",\"id\":1}",
        ),
        (
            "[{'id': 16, 'name': 'Animation'}, {'id': 35, 'name': 'Comedy'}]",
            "[{\"id\":16,\"name\":\"Animation\"},{\"id\":35,\"name\":\"Comedy\"}]",
        ),
        ("  [ 1 ,\n 2 ]  ", "[1,2]"),
        ("[1, # comment\n 2]", "[1,2]"),
        ("[[[[]]]]", "[[[[]]]]"),
    ];
    for &(src, want) in cases {
        match parse(src) {
            Ok(v) => assert_eq!(render(&v), want, "source: {src:?}"),
            Err(e) => panic!("{src:?} failed: {e}"),
        }
    }
}

#[test]
fn errors() {
    let cases: &[&str] = &[
        "",
        "   ",
        "[1, 2",
        "[1 2]",
        "{'a' 1}",
        "{'a': }",
        "'unterminated",
        "'line\nbreak'",
        "\"abc",
        "nil",
        "none",
        "NaN",
        "inf",
        "1 2",
        "[1],",
        "--1",
        "1j",
        "1abc",
        "007",
        "1__0",
        "1_",
        "0x",
        "0xg",
        "1e",
        ".",
        "1.2.3",
        "b'bytes'",
        "f'x'",
        r"'\x4'",
        r"'\u12'",
        r"'\U00110000'",
        r"'\ud800'",
        r"'\N{DASH}'",
        "{[1]: 2}",
        "{{1}}",
        "{1: 2, [3]: 4}",
        "[1, 2]]",
        ")",
        "{'a': 1, 'b'}",
        "(1, 2",
        "'a' 'b",
        "{'a': 1}garbage",
        "[None, Tru]",
        "@",
    ];
    for &src in cases {
        assert!(
            parse(src).is_err(),
            "{src:?} should not parse but gave {:?}",
            parse(src)
        );
    }
}

#[test]
fn error_reports_offset() {
    let e = parse("[1, 2, @]").unwrap_err();
    assert_eq!(e.offset, 7);
    assert!(e.to_string().contains("byte 7"), "{e}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for open in ['[', '(', '{'] {
        let src = open.to_string().repeat(10_000);
        let e = parse(&src).unwrap_err();
        assert_eq!(e.reason, "nesting too deep", "{open}");
    }
    let close: String = "]".repeat(10_000);
    let deep = format!("{}{close}", "[".repeat(10_000));
    assert!(parse(&deep).is_err());
    // Exactly at the limit works, one more level does not.
    let ok = format!(
        "{}{}",
        "[".repeat(literal::DEFAULT_MAX_DEPTH),
        "]".repeat(literal::DEFAULT_MAX_DEPTH)
    );
    assert!(parse(&ok).is_ok());
    let over = format!("[{ok}]");
    assert!(parse(&over).is_err());
    assert!(parse_with_max_depth("[[1]]", 1).is_err());
    assert!(parse_with_max_depth("[[1]]", 2).is_ok());
}

#[test]
fn strings_borrow_unless_escaped() {
    let v = parse("['plain', 'esc\\n']").unwrap();
    let items = v.as_seq().unwrap();
    assert!(matches!(&items[0], Value::Str(Cow::Borrowed("plain"))));
    assert!(matches!(&items[1], Value::Str(Cow::Owned(s)) if s == "esc\n"));
}

#[test]
fn dict_lookup_last_wins() {
    let v = parse("{'id': 1, 'name': 'a', 'id': 2}").unwrap();
    assert_eq!(v.get("id").and_then(Value::as_i64), Some(2));
    assert_eq!(v.get("name").and_then(Value::as_str), Some("a"));
    assert_eq!(v.get("missing"), None);
    assert_eq!(parse("[1]").unwrap().get("id"), None);
}

/// Every literal cell of the real sample files parses, with the shape the cleaner expects.
/// Skipped (with a note) when the shared data folder is absent.
#[test]
fn real_sample_cells_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/the-movies-dataset");
    let files: &[(&str, &[&str])] = &[
        (
            "movies_metadata.csv",
            &[
                "belongs_to_collection",
                "genres",
                "production_companies",
                "production_countries",
                "spoken_languages",
            ],
        ),
        (
            "movies_metadata_quirks.csv",
            &["belongs_to_collection", "genres", "production_companies"],
        ),
        ("credits.csv", &["cast", "crew"]),
        ("keywords.csv", &["keywords"]),
    ];
    if !dir.exists() {
        let why = format!("skipping: {} is absent", dir.display());
        eprintln!("SKIPPED (this test did not run): {why}");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why}: this test must run in CI"
        );
        return;
    }
    let mut cells = 0;
    for (file, cols) in files {
        let mut rdr = csv::Reader::from_path(dir.join(file)).expect("open sample");
        let headers = rdr.headers().expect("headers").clone();
        let idx: Vec<usize> = cols
            .iter()
            .map(|c| headers.iter().position(|h| h == *c).expect("column"))
            .collect();
        for rec in rdr.records() {
            let rec = rec.expect("record");
            for &i in &idx {
                let cell = &rec[i];
                if cell.is_empty() {
                    continue;
                }
                let v = parse(cell).unwrap_or_else(|e| panic!("{file}: {e}: {cell:.200}"));
                assert!(
                    matches!(v, Value::List(_) | Value::Dict(_) | Value::None),
                    "{file}: unexpected shape {cell:.100}"
                );
                cells += 1;
            }
        }
    }
    assert!(cells > 20_000, "only {cells} cells");
    eprintln!("parsed {cells} literal cells from the samples");
}

// ---------------------------------------------------------------------------------------------
// py_literal (a pest-grammar parser of Python literals) as the oracle

fn render_oracle(v: &py_literal::Value) -> String {
    use py_literal::Value as P;
    fn seq(open: char, close: char, items: &[P]) -> String {
        let inner: Vec<String> = items.iter().map(render_oracle).collect();
        format!("{open}{}{close}", inner.join(","))
    }
    match v {
        P::None => "None".into(),
        P::Boolean(b) => (if *b { "True" } else { "False" }).into(),
        P::Integer(i) => {
            let s = i.to_string();
            if s.parse::<i64>().is_ok() {
                s
            } else {
                format!("big:{s}")
            }
        }
        P::Float(f) => format!("{f:?}"),
        P::String(s) => format!("{s:?}"),
        P::List(x) => seq('[', ']', x),
        P::Tuple(x) => seq('(', ')', x),
        P::Set(x) => seq('{', '}', x),
        P::Dict(pairs) => {
            let inner: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", render_oracle(k), render_oracle(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => format!("unsupported:{other:?}"),
    }
}

fn oracle(src: &str) -> Option<String> {
    src.parse::<py_literal::Value>().ok().map(|v| render_oracle(&v))
}

#[test]
fn agrees_with_py_literal_on_edge_cases() {
    let cases = [
        "[{'id': 16, 'name': 'Animation'}, {'id': 35, 'name': 'Comedy'}]",
        "{'name': \"Lion's Gate\", 'id': 1}",
        "{'iso_3166_1': 'CI', 'name': \"Cote D'Ivoire\"}",
        "[{'cast_id': 14, 'character': 'Woody (voice)', 'gender': 2, 'profile_path': None}]",
        r#"'a\\b\'c\"d\ne\tf\rg'"#,
        r"'\x41\u00e9\U0001F600\101'",
        "'Pусский 摇啊摇 Ri¢hie 33⅓'",
        "(1, -2, +3, 4.5, -0.25, 1e3, 8.2e-05, 0x1f, 0o17, 0b11)",
        "[True, False, None, (), (1,), []]",
        "{'a': {'b': {'c': [1, [2, [3]]]}}}",
        "{(1, 2): 'tuple key', 3: 'int key'}",
        "-9223372036854775808",
        "123456789012345678901234567890",
        "[ 1 , 2 , ]",
    ];
    for src in cases {
        let ours = parse(src).map(|v| render(&v)).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(Some(ours), oracle(src), "{src}");
    }
    for bad in ["[1, 2", "{'a' 1}", "'open", "nil", "[1 2]", "{'a': }", "@"] {
        assert!(parse(bad).is_err() && oracle(bad).is_none(), "{bad}");
    }
}

/// Every literal cell of the real sample files gives the same value as py_literal.
/// Skipped (with a note) when the shared data folder is absent.
#[test]
fn agrees_with_py_literal_on_real_cells() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/the-movies-dataset");
    if !dir.exists() {
        let why = format!("skipping: {} is absent", dir.display());
        eprintln!("SKIPPED (this test did not run): {why}");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{why}: this test must run in CI"
        );
        return;
    }
    let mut compared = 0;
    let mut doc = reelflow_clean::literal::Document::new();
    let literal_columns = [
        "belongs_to_collection",
        "genres",
        "production_companies",
        "production_countries",
        "spoken_languages",
        "cast",
        "crew",
        "keywords",
    ];
    for file in [
        "movies_metadata.csv",
        "movies_metadata_sample_ricomateo.csv",
        "credits.csv",
        "keywords.csv",
    ] {
        let mut rdr = csv::Reader::from_path(dir.join(file)).expect("open sample");
        let headers = rdr.headers().expect("headers").clone();
        let idx: Vec<usize> = (0..headers.len())
            .filter(|&i| literal_columns.contains(&&headers[i]))
            .collect();
        for rec in rdr.records() {
            let rec = rec.expect("record");
            for cell in idx.iter().map(|&i| &rec[i]).filter(|c| !c.is_empty()) {
                let ours = parse(cell)
                    .map(|v| render(&v))
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(Some(&ours), oracle(cell).as_ref(), "{file}: {cell:.200}");
                // The reusable document gives the same tree.
                let flat = doc.parse(cell).expect("document parse").to_value();
                assert_eq!(render(&flat), ours);
                compared += 1;
            }
        }
    }
    assert!(compared > 20_000, "only {compared} cells");
    eprintln!("{compared} literal cells agree with py_literal");
}
