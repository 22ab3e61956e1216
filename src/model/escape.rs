//! Text from the wire made safe to store and show: PostgreSQL's `text` refuses NUL, and a
//! subject may hold any byte a raw protocol writer put there.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with backslashes doubled and control characters (NUL among them) written `\xNN`
/// (`\u{NNNN}` past ASCII), so it can be stored as `text` and read back unambiguously.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` with only NUL replaced (by `\x00`): for messages that quote the wire, which must stay
/// readable but can never be refused by PostgreSQL.
pub fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\\x00"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            escape_text("activity.commands.acme"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(without_nul("naïve 🎉"), Cow::Borrowed(_)));
    }

    #[test]
    fn nul_controls_and_backslashes_are_escaped_unambiguously() {
        assert_eq!(escape_text("a\0b"), "a\\x00b");
        assert_eq!(escape_text("a\\x00b"), "a\\\\x00b");
        assert_eq!(escape_text("t\u{7f}\u{85}\n"), "t\\x7f\\u{0085}\\x0a");
        assert_eq!(without_nul("x\0y\0"), "x\\x00y\\x00");
    }
}
