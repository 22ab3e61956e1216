use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

use super::*;

fn ann() -> Personal {
    Personal::new(["josé-ann", "ann@example.com", "Ann Ö Smith"])
}

#[test]
fn a_json_document_names_the_person_however_its_strings_are_spelled() {
    let p = ann();
    for doc in [
        r#"{"user":"josé-ann"}"#,
        r#"{"user":"jos\u00e9-ann"}"#,
        r#"{"user":"jos\u00E9-ann"}"#,
        r#"{"user":"j\u006fs\u00e9\u002dann"}"#,
        r#"{ "tenant" : "acme" ,"metadata":{"x":[1,{"who":"ann@example.com"}]}}"#,
        r#"{"email":"ann@example\u002ecom"}"#,
        r#"{"name":"Ann \u00d6 Smith"}"#,
        // An escaped solidus and a key that names the person.
        r#"{"ann@example.com":true,"a":"\/"}"#,
        // A JSON document inside a string, escaped twice.
        r#"{"payload":"{\"user\":\"jos\\u00e9-ann\"}"}"#,
    ] {
        assert!(p.in_bytes(doc.as_bytes()), "{doc}");
    }
    assert!(!p.in_bytes(br#"{"user":"bob","email":"bob@example.com"}"#));
}

#[test]
fn astral_characters_match_through_surrogate_pairs() {
    let p = Personal::new(["rocket-🚀-user"]);
    assert!(p.in_bytes(br#"{"user":"rocket-\ud83d\ude80-user"}"#));
    assert!(p.in_bytes(br#"{"user":"rocket-\uD83D\uDE80-user"}"#));
    assert!(p.in_bytes("{\"user\":\"rocket-🚀-user\"}".as_bytes()));
}

#[test]
fn case_and_unicode_normal_form_do_not_hide_a_value() {
    let p = ann();
    // Decomposed é (e + combining acute) and upper case.
    assert!(p.in_bytes("{\"user\":\"JOSE\u{301}-ANN\"}".as_bytes()));
    assert!(p.in_text("mail ANN@EXAMPLE.COM bounced"));
}

#[test]
fn bytes_that_are_not_json_are_searched_in_every_spelling() {
    let p = ann();
    // Cut short (a too_large prefix) with an escaped value inside.
    assert!(p.in_bytes(br#"{"type":"register_user","user":"jos\u00e9-ann","meta"#));
    assert!(p.in_bytes("garbage josé-ann garbage".as_bytes()));
    // Not UTF-8 at all: Latin-1 and UTF-16 forms.
    let mut latin1 = b"\xff\xfe junk ".to_vec();
    latin1.extend("josé-ann".chars().map(|c| c as u32 as u8));
    assert!(p.in_bytes(&latin1));
    let utf16: Vec<u8> = "ann@example.com"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(p.in_bytes(&[b"\xff\x00".as_slice(), &utf16].concat()));
    let utf16be: Vec<u8> = "Ann Ö Smith"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    assert!(p.in_bytes(&[b"\x00\xff".as_slice(), &utf16be].concat()));
    assert!(!p.in_bytes(b"\xff\xfe nothing of hers"));
}

#[test]
fn text_the_store_wrote_is_searched_through_its_own_escapes() {
    let p = Personal::new(["ann\\x"]);
    // escape_text doubles backslashes.
    assert!(p.in_text("`ann\\\\x` is not registered in `acme`"));
    assert!(ann().in_text("`josé-ann` is not registered in `acme`"));
    assert!(!ann().in_text("`bob` is not registered in `acme`"));
}

#[test]
fn short_values_match_json_strings_only_whole() {
    let p = Personal::new(["al"]);
    assert!(p.in_bytes(br#"{"user":"al"}"#));
    assert!(p.in_bytes(br#"{"user":"\u0061l"}"#));
    // "al" inside "record_activity" or "alice" is not the person.
    assert!(!p.in_bytes(br#"{"type":"record_activity","user":"alice"}"#));
    // In text that is not JSON, a short value is found as a word of its own only.
    assert!(p.in_text("`al` is not registered in `acme`"));
    assert!(!p.in_text("metadata: invalid value"));
    // Longer values are found inside free text too.
    assert!(ann().in_bytes(br#"{"note":"ask ann@example.com first"}"#));
}

#[test]
fn nothing_to_look_for_matches_nothing() {
    let p = Personal::new(["", ""]);
    assert!(p.is_empty());
    assert!(!p.in_bytes(b"anything"));
    assert!(!p.in_text("anything"));
}

/// A JSON string literal for `s`, spelled one of several ways a producer's encoder might.
fn spell(s: &str, style: u8) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let escape_this = match style % 4 {
            0 => false,
            1 => !c.is_ascii(),
            2 => i % 2 == 0,
            _ => true,
        };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if style % 2 == 1 => out.push_str("\\/"),
            c if (c as u32) < 0x20 || escape_this => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if style >= 4 {
                        out.push_str(&format!("\\u{u:04X}"));
                    } else {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value() -> impl Strategy<Value = String> {
    // Distinct markers with quotes, backslashes, slashes, controls (no NUL) and astral
    // characters around them.
    (
        "[a-z]{6}",
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                Just('/'),
                Just('\u{1}'),
                Just('\t'),
                Just('é'),
                Just('😀'),
                Just('\u{10FFFF}'),
                any::<char>().prop_filter("no NUL", |c| *c != '\0'),
            ],
            0..6,
        ),
    )
        .prop_map(|(marker, extra)| {
            let mut s = format!("zq{marker}");
            s.extend(extra);
            s
        })
}

proptest! {
    #[test]
    fn any_spelling_of_any_value_in_any_position_is_found(
        v in value(),
        style in 0u8..8,
        field in 0usize..4,
    ) {
        let p = Personal::new([v.as_str()]);
        let lit = spell(&v, style);
        let doc = match field {
            0 => format!(r#"{{"user":{lit},"type":"record_activity"}}"#),
            1 => format!(r#"{{ "metadata" : {{ "k" : [ 1 , {lit} ] }} , "tenant":"acme" }}"#),
            2 => format!(r#"{{{lit}:1}}"#),
            _ => format!(r#"{{"user":{lit},"metadata":"#), // cut short: not JSON
        };
        prop_assert!(p.in_bytes(doc.as_bytes()), "{doc}");
    }
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the store's SQL prefilter admits, in Rust: a `\u` or `\x` escape, or a run of
/// the prefilter in the bytes with ASCII letters folded.
fn admits(p: &Personal, bytes: &[u8]) -> bool {
    let folded = bytes.to_ascii_lowercase();
    holds(bytes, b"\\u")
        || holds(bytes, b"\\x")
        || p.prefilter()
            .is_none_or(|runs| runs.iter().any(|r| holds(&folded, r)))
}

/// A JSON string literal for `s` with each character spelled its own way: as is, in the
/// other case, decomposed, as the Kelvin sign for `k`, `\/` for `/`, or `\uXXXX`.
fn mixed(s: &str, choices: &[u8]) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let choice = choices[i % choices.len()] % 6;
        match (c, choice) {
            ('"', _) => out.push_str("\\\""),
            ('\\', _) => out.push_str("\\\\"),
            (c, _) if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            ('/', 1) => out.push_str("\\/"),
            ('k', 2) => out.push('\u{212A}'),
            (c, 3) => out.extend(c.to_uppercase()),
            (c, 4) => out.extend(c.to_string().nfd()),
            (c, 5) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            (c, _) => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    /// Whatever a record spells, if it names the person, the prefilter admits it: the store
    /// may read only what it admits.
    #[test]
    fn the_prefilter_admits_every_record_that_names_the_person(
        v in value(),
        choices in proptest::collection::vec(any::<u8>(), 1..16),
        cut in any::<bool>(),
    ) {
        let p = Personal::new([v.as_str()]);
        let lit = mixed(&v, &choices);
        let doc = if cut {
            format!(r#"{{"user":{lit},"meta"#)
        } else {
            format!(r#"{{"user":{lit}}}"#)
        };
        if p.in_bytes(doc.as_bytes()) {
            prop_assert!(admits(&p, doc.as_bytes()), "{doc}");
        }
    }
}

#[test]
fn the_prefilter_admits_what_normalisation_makes_ascii() {
    let p = Personal::new(["kate.smith@example.org"]);
    for doc in [
        "{\"email\":\"\u{212A}ATE.smith@example.org\"}",
        "{\"email\":\"KATE.SMITH@EXAMPLE.ORG\"}",
    ] {
        assert!(p.in_bytes(doc.as_bytes()), "{doc}");
        assert!(admits(&p, doc.as_bytes()), "{doc}");
    }
    // A value with no run of three literal characters: every record is a candidate.
    assert!(Personal::new(["ki"]).prefilter().is_none());
}
