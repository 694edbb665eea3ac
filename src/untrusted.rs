//! Text from outside certrotd — an API server's answer, a file's content or name, a
//! certificate's names — made safe to show in a log line, a table or the state file.
//!
//! Owns three rules, pure functions with no I/O:
//! - **Identifiers** (`RequestId`, `Code`, `HostId`, response header values): shown only when
//!   they match a strict pattern ([`request_id`], [`code`], [`host_id`]), else replaced by a
//!   fixed placeholder. A real Alibaba id is a short run of letters, digits, dots and dashes;
//!   anything else (spaces, line breaks, `%`, `+`, `/`, more than 64 characters) is not one.
//! - **Free text** (API `Message`, `Recommend`, HTML bodies, error details): [`redact`]
//!   removes anything that could be key material whatever its spacing, encoding or line
//!   breaks, then collapses whitespace, escapes what is left of control characters and caps
//!   the length. See [`redact`] for the rule.
//! - **Control characters**: [`escape`] writes newline, CR, tab, ESC and every other C0/C1
//!   control, DEL and the Unicode bidirectional controls as visible escapes (`\n`, `\x1b`,
//!   `\u{202e}`), so no outside text can break a line, forge a log line or reorder a table.
//!
//! Invariants: every function returns text free of control and bidi characters; [`redact`]'s
//! output holds no 20-character run of base64/hex alphabet text that came from a key-like
//! sequence of the input, however the input split, percent-, JSON- or HTML-escaped it.
//! The guarantee is against echoes (a server or proxy quoting back what it received); a
//! party that holds the key could still spell it out in English words, which no filter can
//! tell from prose.

use std::borrow::Cow;
use std::fmt::Write as _;

/// What replaces an unusable `RequestId` (or `x-acs-request-id` header).
pub(crate) const INVALID_REQUEST_ID: &str = "<invalid request id>";
/// What replaces an unusable error `Code`.
pub(crate) const INVALID_CODE: &str = "<invalid code>";
/// What replaces an unusable `HostId`.
pub(crate) const INVALID_HOST_ID: &str = "<invalid host id>";
/// What replaces key-like material in free text.
pub(crate) const REDACTED: &str = "[redacted]";
/// What ends free text cut at a marker of an echoed request.
const CUT_NOTE: &str = "[rest removed: it may echo request parameters]";

/// Longest identifier kept (characters).
const MAX_ID_CHARS: usize = 64;
/// Longest free text looked at (characters); what lies beyond is never shown.
const MAX_INPUT_CHARS: usize = 64 * 1024;
/// Decoding rounds (`%2520` is two): each round shortens the text or ends the loop.
const DECODE_ROUNDS: usize = 4;
/// A key-like unit of at least this many alphanumeric characters is redacted.
const MIN_REDACTED_RUN: usize = 20;
/// ... and holds at least this many characters of suspect tokens.
const MIN_SUSPECT: usize = 16;
/// A unit of this many tokens or more averaging under [`TINY_TOKEN`] characters is
/// redacted even without a suspect token (a key split into single characters).
const MANY_TOKENS: usize = 6;
const TINY_TOKEN: usize = 3;
/// Longest ordinary word (longer all-letter tokens are not words).
const MAX_WORD: usize = 24;

/// A `RequestId` or `x-acs-request-id` value: `[0-9A-Za-z.-]{1,64}`, else
/// [`INVALID_REQUEST_ID`].
pub(crate) fn request_id(raw: &str) -> String {
    identifier(raw, &['.', '-'], INVALID_REQUEST_ID)
}

/// An error `Code`: `[0-9A-Za-z._-]{1,64}`, else [`INVALID_CODE`].
pub(crate) fn code(raw: &str) -> String {
    identifier(raw, &['.', '_', '-'], INVALID_CODE)
}

/// A `HostId` (a host name): `[0-9A-Za-z.-]{1,64}`, else [`INVALID_HOST_ID`].
pub(crate) fn host_id(raw: &str) -> String {
    identifier(raw, &['.', '-'], INVALID_HOST_ID)
}

/// `raw` when it is 1 to 64 ASCII letters, digits or `extra` characters, else `placeholder`.
fn identifier(raw: &str, extra: &[char], placeholder: &str) -> String {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_ID_CHARS
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if ok { raw } else { placeholder }.to_string()
}

/// Whether `c` must not reach a line unescaped: C0/C1 controls, DEL, the Unicode
/// bidirectional controls and the line/paragraph separators.
pub(crate) fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        )
}

/// `text` with every unsafe character ([`is_unsafe_char`]) written as an escape: `\n`, `\r`,
/// `\t`, `\x1b` (other C0 controls and DEL alike), `\u{85}` (C1), `\u{202e}` (bidi).
/// Borrowed when there is nothing to escape.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Appends `c`, escaped when unsafe.
pub(crate) fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 && is_unsafe_char(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_unsafe_char(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Free text made safe to show, at most `max_chars` characters (plus `…` when cut):
///
/// 1. Percent escapes (`%2B`, `%250A`), JSON escapes (`\n`, `\u002b`, `\/`) and HTML
///    character references (`&#43;`, `&amp;`) are decoded, repeatedly, so every encoding of
///    a key reads as the key itself.
/// 2. Everything from a marker of an echoed request on is removed: a "string to sign"
///    (any spelling), a PEM `-----BEGIN`, an `SSLPri=`-like parameter.
/// 3. The text is split into tokens (runs of ASCII letters and digits). ASCII punctuation,
///    whitespace and control characters between tokens join them (base64's `+/=`, line
///    breaks, the spaces of a reshaped key); other characters separate. Each token is a
///    *word* (`key`, `Invalid`, `a`), *name-like* (`HTTP`, `DomainName`, `SHA256`, `42`,
///    one letter) or *suspect* (anything else: `MIIEvQIB`, `x9Kq`, `0F2B1C3D`).
/// 4. A *unit* is a stretch of joined tokens from one non-word token to another, with no
///    sentence between them (three words, 12 letters, one word of 5+). A unit of 20 or more
///    letters and digits is replaced by `[redacted]` when 16 of them are in suspect tokens,
///    or when it is many tiny tokens (a key split into single characters).
/// 5. Whitespace and control runs become one space; what remains is escaped ([`escape`])
///    and cut to `max_chars`.
///
/// Ordinary messages (sentences, codes, host names, URLs) read as before; a 20+ character
/// stretch of a key cannot survive: a key's base64 is suspect tokens almost throughout.
pub(crate) fn redact(text: &str, max_chars: usize) -> String {
    let bounded: String = text.chars().take(MAX_INPUT_CHARS).collect();
    let decoded = decode_all(&bounded);
    let (kept, was_cut) = cut_at_markers(&decoded);
    let mut out = collapse(&mask_units(kept));
    if was_cut {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(CUT_NOTE);
    }
    truncate_chars(&escape(&out), max_chars)
}

/// A multi-line message as one line: lines trimmed and joined with `; ` (with a space after
/// a line that ends in `:`), blank lines dropped. For messages built as lists (e.g. the
/// credential sources tried) that must fit one log or status line.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// `text` cut to `max` characters, with `…` when something was cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Whitespace and control runs become one space; trimmed.
fn collapse(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || is_unsafe_char(c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decodes escapes until nothing changes (at most [`DECODE_ROUNDS`] rounds).
fn decode_all(text: &str) -> String {
    let mut current = text.to_string();
    for _ in 0..DECODE_ROUNDS {
        let next = decode_once(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// One round: `%HH`, `\n` `\r` `\t` `\/` `\\` `\"` `\uHHHH` `\xHH`, `&#N;` `&#xH;` and a few
/// named HTML references. Undecodable sequences stay as they are; bytes that do not form
/// UTF-8 become U+FFFD.
fn decode_once(text: &str) -> String {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let (bytes, used) = match b[i] {
            b'%' => (hex_byte(b, i + 1).map(|v| vec![v]), 3),
            b'\\' => json_escape(b, i),
            b'&' => html_reference(b, i),
            _ => (None, 1),
        };
        match bytes {
            Some(decoded) => {
                out.extend_from_slice(&decoded);
                i += used;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte written as two hex digits at `b[at..at + 2]`.
fn hex_byte(b: &[u8], at: usize) -> Option<u8> {
    let hi = hex_val(*b.get(at)?)?;
    let lo = hex_val(*b.get(at + 1)?)?;
    Some(hi << 4 | lo)
}

fn utf8_of(c: char) -> Vec<u8> {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf).as_bytes().to_vec()
}

/// A backslash escape at `b[at]`: the bytes it stands for and its length.
fn json_escape(b: &[u8], at: usize) -> (Option<Vec<u8>>, usize) {
    let simple = |v: u8| (Some(vec![v]), 2);
    match b.get(at + 1) {
        Some(b'n') => simple(b'\n'),
        Some(b'r') => simple(b'\r'),
        Some(b't') => simple(b'\t'),
        Some(b'/') => simple(b'/'),
        Some(b'\\') => simple(b'\\'),
        Some(b'"') => simple(b'"'),
        Some(b'x') => (hex_byte(b, at + 2).map(|v| vec![v]), 4),
        Some(b'u') => {
            let code = (0..4).try_fold(0u32, |acc, k| {
                b.get(at + 2 + k)
                    .and_then(|&c| hex_val(c))
                    .map(|v| acc << 4 | u32::from(v))
            });
            let c = code.map(|n| char::from_u32(n).unwrap_or('\u{fffd}'));
            (c.map(utf8_of), 6)
        }
        _ => (None, 1),
    }
}

/// An HTML character reference at `b[at]` (`&#43;`, `&#x2B;`, `&amp;`, …).
fn html_reference(b: &[u8], at: usize) -> (Option<Vec<u8>>, usize) {
    let rest = &b[at + 1..b.len().min(at + 12)];
    let Some(end) = rest.iter().position(|&c| c == b';') else {
        return (None, 1);
    };
    let name = &rest[..end];
    let used = end + 2;
    let c = match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        b"plus" => Some('+'),
        b"sol" => Some('/'),
        b"equals" => Some('='),
        b"nbsp" => Some(' '),
        b"NewLine" => Some('\n'),
        [b'#', b'x' | b'X', hex @ ..] => number(hex, 16),
        [b'#', dec @ ..] => number(dec, 10),
        _ => None,
    };
    (c.map(utf8_of), used)
}

fn number(digits: &[u8], radix: u32) -> Option<char> {
    let text = std::str::from_utf8(digits).ok()?;
    let n = u32::from_str_radix(text, radix).ok()?;
    Some(char::from_u32(n).unwrap_or('\u{fffd}'))
}

// ---------------------------------------------------------------------------------------
// Markers of an echoed request

/// `text` up to the first marker of an echoed request, and whether it was cut there.
fn cut_at_markers(text: &str) -> (&str, bool) {
    const MARKERS: &[&str] = &[
        "string to sign",
        "stringtosign",
        "string-to-sign",
        "string_to_sign",
        "-----begin",
        "sslpri=",
        "sslpri:",
        "sslpri\"",
        "sslpri&",
    ];
    let lower = text.to_ascii_lowercase();
    match MARKERS.iter().filter_map(|m| lower.find(m)).min() {
        // ASCII lowercasing keeps every byte offset, so `at` is a char boundary of `text`.
        Some(at) => (text.get(..at).unwrap_or(""), true),
        None => (text, false),
    }
}

// ---------------------------------------------------------------------------------------
// Key-like units

/// What a token (a run of ASCII letters and digits) looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// An ordinary word: `key`, `Invalid`, `a`, `I`.
    Word,
    /// A name or number: `HTTP`, `DomainName`, `SSLPri`, `SHA256`, `2026`, `q`.
    Name,
    /// Anything else: what base64, hex and ids are made of.
    Suspect,
}

/// One token of the text: its byte range and class.
#[derive(Clone, Copy, Debug)]
struct Tok {
    start: usize,
    end: usize,
    class: Token,
}

impl Tok {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

fn classify(token: &str) -> Token {
    let b = token.as_bytes();
    let letters_end = b
        .iter()
        .rposition(|c| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (letters, digits) = b.split_at(letters_end);
    if letters.is_empty() {
        return if digits.len() <= 10 {
            Token::Name
        } else {
            Token::Suspect
        };
    }
    if letters.iter().any(u8::is_ascii_digit) || digits.len() > 5 {
        return Token::Suspect;
    }
    let lower_word = |w: &[u8]| w.len() >= 2 && w.iter().all(u8::is_ascii_lowercase);
    let word = match letters {
        [b'a' | b'A' | b'I'] => true,
        [first, rest @ ..] => {
            letters.len() <= MAX_WORD
                && (lower_word(letters) || (first.is_ascii_uppercase() && lower_word(rest)))
        }
        [] => false,
    };
    if word && digits.is_empty() {
        return Token::Word;
    }
    if word || letters.len() == 1 || is_acronym(letters) || is_camel_case(letters) {
        Token::Name
    } else {
        Token::Suspect
    }
}

fn is_acronym(letters: &[u8]) -> bool {
    (2..=6).contains(&letters.len()) && letters.iter().all(u8::is_ascii_uppercase)
}

/// `DomainName`, `SSLPri`, `RequestId`, `requestId`, `ServiceID`: runs of up to 4 capitals,
/// each followed by 2+ small letters (only the last may have 1, or none if it is the end).
fn is_camel_case(letters: &[u8]) -> bool {
    if letters.len() > 40 {
        return false;
    }
    let mut runs: Vec<(bool, usize)> = Vec::new();
    for &c in letters {
        let upper = c.is_ascii_uppercase();
        match runs.last_mut() {
            Some((u, n)) if *u == upper => *n += 1,
            _ => runs.push((upper, 1)),
        }
    }
    let last = runs.len() - 1;
    runs.iter().enumerate().all(
        |(i, &(upper, n))| {
            if upper { n <= 4 } else { n >= 2 || i == last }
        },
    )
}

/// Whether the character between two tokens joins them (ASCII punctuation, whitespace,
/// controls and invisible format characters) rather than separating them (any other
/// character: letters of other scripts, symbols such as `…`).
fn joins(c: char) -> bool {
    c.is_ascii() || c.is_whitespace() || is_unsafe_char(c) || c == '\u{feff}' || c == '\u{200b}'
}

/// The tokens of `text`, in order, and for each the index of the region it belongs to
/// (a separator starts a new region).
fn tokens(text: &str) -> Vec<(usize, Tok)> {
    let mut out = Vec::new();
    let mut region = 0;
    let mut start: Option<usize> = None;
    let push = |out: &mut Vec<(usize, Tok)>, region: usize, s: usize, e: usize| {
        let class = classify(&text[s..e]);
        out.push((
            region,
            Tok {
                start: s,
                end: e,
                class,
            },
        ));
    };
    for (i, c) in text.char_indices() {
        if c.is_ascii_alphanumeric() {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            push(&mut out, region, s, i);
        }
        if !joins(c) {
            region += 1;
        }
    }
    if let Some(s) = start {
        push(&mut out, region, s, text.len());
    }
    out
}

/// Whether `run` (consecutive words) is a piece of a sentence: 3+ words, 12+ letters, one
/// word of 5+.
fn is_sentence(run: &[Tok]) -> bool {
    run.len() >= 3
        && run.iter().map(Tok::len).sum::<usize>() >= 12
        && run.iter().any(|t| t.len() >= 5)
}

/// Byte ranges of the units to redact.
fn units_to_redact(text: &str) -> Vec<(usize, usize)> {
    let toks = tokens(text);
    let mut out = Vec::new();
    // Tokens before `floor` are already in a redacted range.
    let mut floor = 0;
    let mut i = 0;
    while i < toks.len() {
        if toks[i].1.class == Token::Word {
            i += 1;
            continue;
        }
        // A unit starts at a non-word token and grows over words unless they form a
        // sentence, up to the last non-word token before a sentence or a separator.
        let region = toks[i].0;
        let mut last = i;
        let mut j = i + 1;
        while j < toks.len() && toks[j].0 == region {
            if toks[j].1.class != Token::Word {
                last = j;
                j += 1;
                continue;
            }
            let words_end = (j..toks.len())
                .find(|&k| toks[k].0 != region || toks[k].1.class != Token::Word)
                .unwrap_or(toks.len());
            let run: Vec<Tok> = toks[j..words_end].iter().map(|t| t.1).collect();
            let continues = words_end < toks.len() && toks[words_end].0 == region;
            if is_sentence(&run) || !continues {
                break;
            }
            j = words_end;
        }
        let unit: Vec<Tok> = toks[i..=last].iter().map(|t| t.1).collect();
        if is_key_like(&unit) {
            // Words stuck to the unit by base64 punctuation (`lw==`, `+ab`) are its ends.
            let (mut first, mut end) = (i, last);
            while first > floor && toks[first - 1].0 == region && glued(text, toks[first - 1].1) {
                first -= 1;
            }
            while end + 1 < toks.len() && toks[end + 1].0 == region && glued(text, toks[end + 1].1)
            {
                end += 1;
            }
            out.push(widen(text, toks[first].1.start, toks[end].1.end));
            floor = end + 1;
            i = end + 1;
            continue;
        }
        i = last + 1;
    }
    out
}

/// Whether word `tok` touches base64 punctuation: `+` or `/` on either side, `=` after.
fn glued(text: &str, tok: Tok) -> bool {
    let b = text.as_bytes();
    let before = tok.start.checked_sub(1).and_then(|k| b.get(k)).copied();
    let after = b.get(tok.end).copied();
    tok.class == Token::Word
        && (matches!(before, Some(b'+' | b'/')) || matches!(after, Some(b'+' | b'/' | b'=')))
}

/// `start..end` grown over the base64 punctuation (`+`, `/`, `=`) right next to it.
fn widen(text: &str, start: usize, end: usize) -> (usize, usize) {
    let b = text.as_bytes();
    let is_b64 = |c: u8| matches!(c, b'+' | b'/' | b'=');
    let start = start - b[..start].iter().rev().take_while(|&&c| is_b64(c)).count();
    let end = end + b[end..].iter().take_while(|&&c| is_b64(c)).count();
    (start, end)
}

fn is_key_like(unit: &[Tok]) -> bool {
    let total: usize = unit.iter().map(Tok::len).sum();
    if total < MIN_REDACTED_RUN {
        return false;
    }
    let suspect: usize = unit
        .iter()
        .filter(|t| t.class == Token::Suspect)
        .map(Tok::len)
        .sum();
    let tiny = unit.len() >= MANY_TOKENS && total < unit.len() * TINY_TOKEN;
    suspect >= MIN_SUSPECT || tiny
}

/// `text` with every key-like unit replaced by [`REDACTED`].
fn mask_units(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in units_to_redact(text) {
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests;
