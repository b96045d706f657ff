//! Subject lookup in JSONL lines without building a JSON tree: this module owns the per-line
//! view that filter and erase decide on. [`classify`] takes one JSONL line and a dotted
//! [`SubjectPath`], checks the whole line against the RFC 8259 grammar and UTF-8 in a single
//! left-to-right pass, and reports which data subject the line belongs to ([`Line`]), decoding
//! only the keys and values on the path. It is the product's hot path: string bodies are
//! skipped by word-at-a-time scanning, UTF-8 is only validated once a non-ASCII byte shows up,
//! open containers live on an explicit bit stack (no recursion, so hostile nesting cannot
//! overflow the call stack), and the common case (a subject that is an unescaped string or an
//! integer) does not allocate. [`any_token`] is the lenient counterpart used to erase lines
//! that are not valid JSON.

use std::borrow::Cow;

/// A dotted subject path such as `meta.author.id`, split into object keys.
///
/// Each segment is matched against object keys by exact value after JSON unescaping. A key
/// that itself contains a `.` cannot be addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPath {
    segments: Vec<String>,
}

impl SubjectPath {
    /// Splits `dotted` on `.`.
    ///
    /// # Errors
    ///
    /// A message on an empty path or an empty segment ("a..b", ".a", "a.").
    pub fn parse(dotted: &str) -> Result<SubjectPath, String> {
        if dotted.is_empty() {
            return Err("subject path is empty".to_owned());
        }
        let segments: Vec<String> = dotted.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("subject path {dotted:?} has an empty segment"));
        }
        Ok(SubjectPath { segments })
    }
    /// The object keys of the path, outermost first (also the Parquet column path).
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

/// What one JSONL line says about its data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line is empty or holds only JSON whitespace (space, `\t`, `\r`, `\n`).
    Blank,
    /// The line is not valid UTF-8, not valid JSON, or valid JSON that is not an object.
    Malformed,
    /// The path is absent, passes through a non-object, or ends at `null` or `""`.
    Missing,
    /// The value at the path is a float or exponent number, a bool, an object, an array, or
    /// a string holding a lone surrogate escape.
    Invalid,
    /// Some object on the path holds its key more than once. Carries, in document order, the
    /// ids of every occurrence reached that is a valid subject (possibly none).
    Ambiguous(Vec<Cow<'a, str>>),
    /// The path occurs exactly once and holds a valid subject id: a non-empty string (its
    /// unescaped value) or an integer (its literal digits, `-0` as `0`).
    Subject(Cow<'a, str>),
}

/// Classifies one JSONL line (without its trailing `\n`) by the value at `path`.
///
/// The whole line is validated, including the parts off the path; any grammar or UTF-8 error
/// gives [`Line::Malformed`]. Ids borrow from `line` unless they needed unescaping. Never
/// panics, whatever the input. Allocates only to unescape an id, to list the ids of an
/// ambiguous line, or to track nesting deeper than 256 levels (one bit per level).
#[must_use]
pub fn classify<'a>(line: &'a [u8], path: &SubjectPath) -> Line<'a> {
    let start = skip_ws(line, 0);
    match line.get(start) {
        None => Line::Blank,
        Some(b'{') => Walker::new(line, &path.segments)
            .run(start + 1)
            .unwrap_or(Line::Malformed),
        Some(_) => Line::Malformed,
    }
}

/// For erasure of malformed lines: calls `hit` with the decoded value of every JSON string token
/// and the decimal text of every integer token found by a lenient left-to-right tokenizer (the
/// line may be broken JSON: unterminated strings are ignored, garbage between tokens skipped).
/// Returns true as soon as `hit` returns true.
///
/// Lenient rules: a string token runs from `"` to the next `"` not preceded by an escaping `\`;
/// an unterminated string ends the scan (everything after its opening quote is its body).
/// Valid escapes are decoded, a lone surrogate escape becomes U+FFFD, an invalid escape is kept
/// verbatim and invalid UTF-8 is replaced by U+FFFD. An integer token is `-`? followed by
/// digits and not followed by a fraction or exponent; it is reported as written, except that
/// `-0` is reported as `0` (as [`classify`] does). Numbers with a fraction or exponent are
/// skipped whole. Keys are string tokens too. Any other byte is skipped.
pub fn any_token(line: &[u8], mut hit: impl FnMut(&str) -> bool) -> bool {
    let mut i = 0;
    while let Some(&c) = line.get(i) {
        match c {
            b'"' => {
                let Some(end) = lenient_string_end(line, i + 1) else {
                    return false;
                };
                let body = line.get(i + 1..end).unwrap_or_default();
                if hit(&lenient_decode(body)) {
                    return true;
                }
                i = end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let (end, integer) = lenient_number(line, i);
                if let Some(text) = integer {
                    if hit(text) {
                        return true;
                    }
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    false
}

/// The line is not a valid JSON object.
struct Bad;

/// What the value after a key means for the path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not on the path: only validated.
    Off,
    /// An intermediate path key: an object here is followed, anything else is missing.
    Step,
    /// The last path key: the value is a candidate subject.
    Leaf,
}

/// What the parser expects next (after skipping whitespace).
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after `{`: a key or `}`.
    ObjectStart,
    /// Just after `,` in an object: a key.
    ObjectNext,
    /// Just after `[`: a value or `]`.
    ArrayStart,
    /// A value, with the meaning given by its key.
    Value(Role),
    /// Just after a value: `,` or the closing bracket of the enclosing container.
    AfterValue,
}

/// One occurrence of the last path key.
enum Leaf<'a> {
    Missing,
    Invalid,
    Subject(Cow<'a, str>),
}

/// One-pass validator that follows the subject path.
///
/// Open containers form a stack whose bottom part is the chain of objects on the path (one
/// per path level, counted by `path_depth`, each with a `seen` bit recording whether it already
/// held its path key) and whose top part is off-path containers (`nested`, one bit per level:
/// object or array). An off-path container can never contain a path object, so this split is
/// exact.
///
/// UTF-8 is checked lazily: every byte outside strings is checked by the grammar, which only
/// admits ASCII there, and string scanning stops at the first non-ASCII byte, validates the
/// rest of the line with `std::str::from_utf8` once, and from then on skips non-ASCII bytes.
/// An all-ASCII line thus never pays for a separate validation pass.
struct Walker<'a, 'p> {
    line: &'a [u8],
    /// Whether string scanning must still stop at non-ASCII bytes.
    check_utf8: bool,
    segments: &'p [String],
    path_depth: usize,
    seen: BitStack,
    nested: BitStack,
    ambiguous: bool,
    first: Option<Leaf<'a>>,
    more: Vec<Cow<'a, str>>,
}

impl<'a, 'p> Walker<'a, 'p> {
    fn new(line: &'a [u8], segments: &'p [String]) -> Self {
        let mut seen = BitStack::default();
        seen.push(false);
        Walker {
            line,
            check_utf8: true,
            segments,
            path_depth: 1,
            seen,
            nested: BitStack::default(),
            ambiguous: false,
            first: None,
            more: Vec::new(),
        }
    }

    /// Parses from just after the root `{` to the end of the line.
    fn run(mut self, mut pos: usize) -> Result<Line<'a>, Bad> {
        let b = self.line;
        let mut state = State::ObjectStart;
        loop {
            pos = skip_ws(b, pos);
            let c = *b.get(pos).ok_or(Bad)?;
            match state {
                State::ObjectStart | State::ObjectNext => {
                    if c == b'}' && state == State::ObjectStart {
                        pos += 1;
                        if self.close_object() {
                            break;
                        }
                        state = State::AfterValue;
                        continue;
                    }
                    (pos, state) = self.members(pos)?;
                }
                State::ArrayStart if c == b']' => {
                    pos += 1;
                    self.nested.pop();
                    state = State::AfterValue;
                }
                State::ArrayStart => (pos, state) = self.value(pos, c, Role::Off)?,
                State::Value(role) => (pos, state) = self.value(pos, c, role)?,
                State::AfterValue => {
                    pos += 1;
                    let in_array = self.nested.top() == Some(false);
                    match (c, in_array) {
                        (b',', false) => state = State::ObjectNext,
                        (b',', true) => state = State::Value(Role::Off),
                        (b'}', false) => {
                            if self.close_object() {
                                break;
                            }
                        }
                        (b']', true) => {
                            self.nested.pop();
                        }
                        _ => return Err(Bad),
                    }
                }
            }
        }
        if skip_ws(b, pos) != b.len() {
            return Err(Bad);
        }
        Ok(self.finish())
    }

    /// Parses object members from the key at `pos` on, through commas, until a value opens a
    /// container or no comma follows; returns where the main loop resumes.
    #[inline(always)]
    fn members(&mut self, mut pos: usize) -> Result<(usize, State), Bad> {
        let b = self.line;
        loop {
            if b.get(pos) != Some(&b'"') {
                return Err(Bad);
            }
            let (end, escaped) = self.scan_string(pos + 1)?;
            let role = self.key_role(pos + 1, end, escaped);
            pos = skip_ws(b, end + 1);
            if b.get(pos) != Some(&b':') {
                return Err(Bad);
            }
            pos = skip_ws(b, pos + 1);
            let c = *b.get(pos).ok_or(Bad)?;
            let (next, state) = self.value(pos, c, role)?;
            if state != State::AfterValue {
                return Ok((next, state));
            }
            pos = skip_ws(b, next);
            if b.get(pos) != Some(&b',') {
                return Ok((pos, State::AfterValue));
            }
            pos = skip_ws(b, pos + 1);
        }
    }

    /// Parses the value starting with byte `c` at `pos`; returns where parsing resumes.
    #[inline(always)]
    fn value(&mut self, pos: usize, c: u8, role: Role) -> Result<(usize, State), Bad> {
        let b = self.line;
        let is_leaf = role == Role::Leaf;
        match c {
            b'{' => {
                if role == Role::Step {
                    self.path_depth += 1;
                    self.seen.push(false);
                } else {
                    if is_leaf {
                        self.record(Leaf::Invalid);
                    }
                    self.nested.push(true);
                }
                Ok((pos + 1, State::ObjectStart))
            }
            b'[' => {
                if is_leaf {
                    self.record(Leaf::Invalid);
                }
                self.nested.push(false);
                Ok((pos + 1, State::ArrayStart))
            }
            b'"' => {
                let (end, escaped) = self.scan_string(pos + 1)?;
                if is_leaf {
                    let leaf = string_leaf(self.str_at(pos + 1, end)?, escaped);
                    self.record(leaf);
                }
                Ok((end + 1, State::AfterValue))
            }
            b'-' | b'0'..=b'9' => {
                let (end, integral) = scan_number(b, pos)?;
                if is_leaf {
                    let leaf = if integral {
                        let digits = self.str_at(pos, end)?;
                        Leaf::Subject(Cow::Borrowed(if digits == "-0" { "0" } else { digits }))
                    } else {
                        Leaf::Invalid
                    };
                    self.record(leaf);
                }
                Ok((end, State::AfterValue))
            }
            b't' | b'f' | b'n' => {
                let (word, leaf): (&[u8], Leaf) = match c {
                    b't' => (b"true", Leaf::Invalid),
                    b'f' => (b"false", Leaf::Invalid),
                    _ => (b"null", Leaf::Missing),
                };
                let end = pos + word.len();
                if b.get(pos..end) != Some(word) {
                    return Err(Bad);
                }
                if is_leaf {
                    self.record(leaf);
                }
                Ok((end, State::AfterValue))
            }
            _ => Err(Bad),
        }
    }

    /// Decides what the value after the key `line[start..end]` means, noting duplicates of a
    /// path key.
    fn key_role(&mut self, start: usize, end: usize, escaped: bool) -> Role {
        if !self.nested.is_empty() {
            return Role::Off;
        }
        let Some(level) = self.path_depth.checked_sub(1) else {
            return Role::Off;
        };
        let (Some(segment), Some(raw)) = (self.segments.get(level), self.line.get(start..end))
        else {
            return Role::Off;
        };
        let equal = if escaped {
            std::str::from_utf8(raw).is_ok_and(|raw| escaped_key_equals(raw, segment))
        } else {
            raw == segment.as_bytes()
        };
        if !equal {
            return Role::Off;
        }
        if self.seen.top() == Some(true) {
            self.ambiguous = true;
        } else {
            self.seen.set_top(true);
        }
        if level + 1 == self.segments.len() {
            Role::Leaf
        } else {
            Role::Step
        }
    }

    /// Validates a string body starting at `start` (just after the opening quote). Returns the
    /// index of the closing quote and whether the body holds any escape.
    #[inline(always)]
    fn scan_string(&mut self, start: usize) -> Result<(usize, bool), Bad> {
        let b = self.line;
        let mut i = start;
        let mut escaped = false;
        loop {
            i = find_special(b, i, self.check_utf8);
            match b.get(i) {
                Some(b'"') => return Ok((i, escaped)),
                Some(b'\\') => {
                    escaped = true;
                    i += match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        Some(b'u') if hex4(b.get(i + 2..i + 6)).is_some() => 6,
                        _ => return Err(Bad),
                    };
                }
                Some(0x80..) => {
                    let rest = b.get(i..).ok_or(Bad)?;
                    std::str::from_utf8(rest).map_err(|_| Bad)?;
                    self.check_utf8 = false;
                }
                _ => return Err(Bad),
            }
        }
    }

    /// The text of `line[start..end]`, whose bounds are next to ASCII bytes.
    fn str_at(&self, start: usize, end: usize) -> Result<&'a str, Bad> {
        let bytes = self.line.get(start..end).ok_or(Bad)?;
        std::str::from_utf8(bytes).map_err(|_| Bad)
    }

    /// Closes the innermost open object; returns true when that was the root.
    fn close_object(&mut self) -> bool {
        if self.nested.pop().is_some() {
            return false;
        }
        self.seen.pop();
        self.path_depth = self.path_depth.saturating_sub(1);
        self.path_depth == 0
    }

    fn record(&mut self, leaf: Leaf<'a>) {
        if self.first.is_none() {
            self.first = Some(leaf);
        } else if let Leaf::Subject(id) = leaf {
            self.more.push(id);
        }
    }

    fn finish(self) -> Line<'a> {
        if self.ambiguous {
            let mut ids = Vec::with_capacity(1 + self.more.len());
            if let Some(Leaf::Subject(id)) = self.first {
                ids.push(id);
            }
            ids.extend(self.more);
            return Line::Ambiguous(ids);
        }
        match self.first {
            None | Some(Leaf::Missing) => Line::Missing,
            Some(Leaf::Invalid) => Line::Invalid,
            Some(Leaf::Subject(id)) => Line::Subject(id),
        }
    }
}

/// Classifies a grammar-valid string body found at the end of the path.
fn string_leaf(raw: &str, escaped: bool) -> Leaf<'_> {
    if raw.is_empty() {
        return Leaf::Missing;
    }
    if !escaped {
        return Leaf::Subject(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    for piece in (Unescape { rest: raw }) {
        match piece {
            Ok(Piece::Text(t)) => out.push_str(t),
            Ok(Piece::Char(c)) => out.push(c),
            Err(NotText) => return Leaf::Invalid,
        }
    }
    Leaf::Subject(Cow::Owned(out))
}

/// Whether the grammar-valid, escaped string body `raw` decodes to exactly `want`.
fn escaped_key_equals(raw: &str, want: &str) -> bool {
    let mut want = want;
    for piece in (Unescape { rest: raw }) {
        let rest = match piece {
            Ok(Piece::Text(t)) => want.strip_prefix(t),
            Ok(Piece::Char(c)) => want.strip_prefix(c),
            Err(NotText) => None,
        };
        match rest {
            Some(rest) => want = rest,
            None => return false,
        }
    }
    want.is_empty()
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

const ONES: u64 = u64::MAX / 0xFF;
const HIGHS: u64 = ONES << 7;

/// Index of the first byte at or after `i` that is `"`, `\`, below 0x20 or (when
/// `stop_non_ascii`) at or above 0x80; `b.len()` if there is none.
///
/// Tuned for many short strings and a few long ones: the first eight bytes are checked inline
/// as one SWAR word; longer runs go to [`find_special_long`].
#[inline(always)]
fn find_special(b: &[u8], i: usize, stop_non_ascii: bool) -> usize {
    let high = if stop_non_ascii { 0x80 } else { 0 };
    match b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        Some(word) => match first_special(*word, high) {
            Some(found) => i + found,
            None => find_special_long(b, i + 8, high),
        },
        None => find_special_long(b, i, high),
    }
}

/// [`find_special`] without the inline first word, for `high` 0 or 0x80. Long string values
/// (a document's text) spend most of a line's scan here, so on a CPU with AVX2 it runs in
/// 64-byte groups on 32-byte vectors (found at run time: the build targets any x86-64).
fn find_special_long(b: &[u8], i: usize, high: u8) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature `find_special_avx2` is compiled for.
        return unsafe { find_special_avx2(b, i, high) };
    }
    find_special_in_groups::<4>(b, i, high)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn find_special_avx2(b: &[u8], i: usize, high: u8) -> usize {
    find_special_in_groups::<8>(b, i, high)
}

/// [`find_special_long`]'s scan: `G` words (8 bytes each) at a time with a branch-free fold
/// that the compiler turns into vector compares, then the word holding the hit is located
/// with SWAR; the last bytes one word or one byte at a time.
#[inline(always)]
fn find_special_in_groups<const G: usize>(b: &[u8], i: usize, high: u8) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    let (words, tail) = rest.as_chunks::<8>();
    let (groups, odd) = words.as_chunks::<G>();
    let mut at = i;
    // `c - high < high + 0x20` (wrapping) is `c < 0x20` for `high` 0, and `c < 0x20 || c >= 0x80`
    // for `high` 0x80, in a single compare.
    let limit = high.wrapping_add(0x20);
    for group in groups {
        let any = group.as_flattened().iter().fold(0u8, |acc, &c| {
            acc | u8::from((c == b'"') | (c == b'\\') | (c.wrapping_sub(high) < limit))
        });
        if any != 0 {
            let mut word_at = at;
            for word in group {
                if let Some(found) = first_special(*word, high) {
                    return word_at + found;
                }
                word_at += 8;
            }
        }
        at += 8 * G;
    }
    for word in odd {
        if let Some(found) = first_special(*word, high) {
            return at + found;
        }
        at += 8;
    }
    tail.iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20 || c & high != 0)
        .map_or(b.len(), |found| at + found)
}

/// Offset of the first special byte (see [`find_special`]) in `word`, by SWAR: a byte's high
/// bit is set in the mask when the byte is special. Borrows only run towards higher bytes and
/// only out of a truly special byte, so the lowest set bit marks the first special byte.
#[inline]
fn first_special(word: [u8; 8], high: u8) -> Option<usize> {
    let w = u64::from_le_bytes(word);
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let mask = (quote.wrapping_sub(ONES) & !quote
        | backslash.wrapping_sub(ONES) & !backslash
        | w.wrapping_sub(ONES * 0x20) & !w
        | w & (ONES * u64::from(high)))
        & HIGHS;
    (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize)
}

/// Validates an RFC 8259 number starting at `start`. Returns its end and whether it has
/// neither fraction nor exponent.
fn scan_number(b: &[u8], start: usize) -> Result<(usize, bool), Bad> {
    let mut i = start + usize::from(b.get(start) == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += count_digits(b, i),
        _ => return Err(Bad),
    }
    let mut integral = true;
    if b.get(i) == Some(&b'.') {
        integral = false;
        let n = count_digits(b, i + 1);
        if n == 0 {
            return Err(Bad);
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        integral = false;
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = count_digits(b, i);
        if n == 0 {
            return Err(Bad);
        }
        i += n;
    }
    Ok((i, integral))
}

fn count_digits(b: &[u8], start: usize) -> usize {
    b.get(start..).map_or(0, |rest| {
        rest.iter().take_while(|c| c.is_ascii_digit()).count()
    })
}

/// The value of four hex digits, if `digits` is exactly that.
fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits?;
    if digits.len() != 4 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc << 4 | v)
    })
}

/// A string body that does not decode to Unicode text (lone surrogate or invalid escape).
struct NotText;

/// A run of a decoded string body.
enum Piece<'a> {
    Text(&'a str),
    Char(char),
}

/// Decodes a JSON string body into pieces; stops after the first error.
struct Unescape<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Unescape<'a> {
    type Item = Result<Piece<'a>, NotText>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        let item = match memchr::memchr(b'\\', rest.as_bytes()) {
            None => {
                self.rest = "";
                Ok(Piece::Text(rest))
            }
            Some(0) => decode_escape(rest.as_bytes()).and_then(|(c, len)| {
                self.rest = rest.get(len..).ok_or(NotText)?;
                Ok(Piece::Char(c))
            }),
            Some(n) => match rest.split_at_checked(n) {
                Some((text, tail)) => {
                    self.rest = tail;
                    Ok(Piece::Text(text))
                }
                None => Err(NotText),
            },
        };
        if item.is_err() {
            self.rest = "";
        }
        Some(item)
    }
}

/// Decodes the escape at the start of `b` (which begins with `\`). Returns the character and
/// the number of bytes used; a surrogate pair is one character from two `\u` escapes.
fn decode_escape(b: &[u8]) -> Result<(char, usize), NotText> {
    let simple = match b.get(1) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let unit = hex4(b.get(2..6)).ok_or(NotText)?;
            if !(0xD800..0xDC00).contains(&unit) {
                return char::from_u32(unit).map(|c| (c, 6)).ok_or(NotText);
            }
            if b.get(6..8) != Some(b"\\u") {
                return Err(NotText);
            }
            let low = hex4(b.get(8..12)).ok_or(NotText)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(NotText);
            }
            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            return char::from_u32(code).map(|c| (c, 12)).ok_or(NotText);
        }
        _ => return Err(NotText),
    };
    Ok((simple, 2))
}

/// Index of the quote closing a string whose body starts at `start`, skipping `\`-escaped
/// bytes; `None` when the string is unterminated.
fn lenient_string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b.get(j) == Some(&b'"') {
            return Some(j);
        }
        i = j + 2;
    }
}

/// Decodes a possibly broken string body as described on [`any_token`].
fn lenient_decode(body: &[u8]) -> Cow<'_, str> {
    if memchr::memchr(b'\\', body).is_none() {
        return String::from_utf8_lossy(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(n) = memchr::memchr(b'\\', rest) {
        let Some((text, escape)) = rest.split_at_checked(n) else {
            break;
        };
        out.extend_from_slice(text);
        let (c, len) = match decode_escape(escape) {
            Ok(decoded) => decoded,
            Err(NotText) if escape.get(1) == Some(&b'u') && hex4(escape.get(2..6)).is_some() => {
                ('\u{FFFD}', 6)
            }
            Err(NotText) => ('\\', 1),
        };
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        rest = escape.get(len..).unwrap_or_default();
    }
    out.extend_from_slice(rest);
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Reads a lenient number token at `start` (a `-` or a digit). Returns where scanning resumes
/// (always past `start`) and the integer text to report, if the token is an integer.
fn lenient_number(b: &[u8], start: usize) -> (usize, Option<&str>) {
    let negative = b.get(start) == Some(&b'-');
    let digits_start = start + usize::from(negative);
    let digits_end = digits_start + count_digits(b, digits_start);
    if digits_end == digits_start {
        return (start + 1, None);
    }
    let mut end = digits_end;
    let mut integral = true;
    if b.get(end) == Some(&b'.') {
        integral = false;
        end += 1 + count_digits(b, end + 1);
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        integral = false;
        end += 1;
        if matches!(b.get(end), Some(b'+' | b'-')) {
            end += 1;
        }
        end += count_digits(b, end);
    }
    if !integral {
        return (end, None);
    }
    let text_start = if negative && b.get(digits_start..digits_end) == Some(b"0") {
        digits_start
    } else {
        start
    };
    let text = b
        .get(text_start..digits_end)
        .and_then(|digits| std::str::from_utf8(digits).ok());
    (end, text)
}

const INLINE_WORDS: usize = 4;

/// A stack of bits, inline up to `64 * INLINE_WORDS` entries and on the heap beyond.
#[derive(Default)]
struct BitStack {
    len: usize,
    inline: [u64; INLINE_WORDS],
    spill: Vec<u64>,
}

impl BitStack {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, bit: bool) {
        let i = self.len;
        self.len += 1;
        self.write(i, bit);
    }

    fn pop(&mut self) -> Option<bool> {
        let top = self.top()?;
        self.len -= 1;
        Some(top)
    }

    fn top(&self) -> Option<bool> {
        let i = self.len.checked_sub(1)?;
        let word = match (i / 64).checked_sub(INLINE_WORDS) {
            None => self.inline.get(i / 64),
            Some(k) => self.spill.get(k),
        };
        Some(word.is_some_and(|w| w >> (i % 64) & 1 == 1))
    }

    fn set_top(&mut self, bit: bool) {
        if let Some(i) = self.len.checked_sub(1) {
            self.write(i, bit);
        }
    }

    fn write(&mut self, i: usize, bit: bool) {
        let word = match (i / 64).checked_sub(INLINE_WORDS) {
            None => self.inline.get_mut(i / 64),
            Some(k) => {
                if k == self.spill.len() {
                    self.spill.push(0);
                }
                self.spill.get_mut(k)
            }
        };
        if let Some(w) = word {
            let mask = 1u64 << (i % 64);
            if bit {
                *w |= mask;
            } else {
                *w &= !mask;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn path(p: &str) -> SubjectPath {
        SubjectPath::parse(p).expect("test path is valid")
    }

    fn cls<'a>(line: &'a str, p: &str) -> Line<'a> {
        classify(line.as_bytes(), &path(p))
    }

    fn subject(id: &str) -> Line<'_> {
        Line::Subject(Cow::Borrowed(id))
    }

    fn ambiguous<'a>(ids: &[&'a str]) -> Line<'a> {
        Line::Ambiguous(ids.iter().map(|s| Cow::Borrowed(*s)).collect())
    }

    #[test]
    fn path_parsing() {
        assert!(SubjectPath::parse("").is_err());
        assert!(SubjectPath::parse("a..b").is_err());
        assert!(SubjectPath::parse(".a").is_err());
        assert!(SubjectPath::parse("a.").is_err());
        assert!(SubjectPath::parse(".").is_err());
        assert_eq!(path("meta.author.id").segments, ["meta", "author", "id"]);
        assert_eq!(path("user_id").segments, ["user_id"]);
    }

    #[test]
    fn blank_lines() {
        for line in ["", " ", "\r", "\t \r\n  ", "\n"] {
            assert_eq!(cls(line, "user_id"), Line::Blank, "{line:?}");
        }
    }

    #[test]
    fn string_subjects() {
        assert_eq!(cls(r#"{"user_id":"u1"}"#, "user_id"), subject("u1"));
        assert_eq!(cls(r#"{"user_id":"\u0041"}"#, "user_id"), subject("A"));
        assert_eq!(
            cls(r#"{"user_id":"a\"b\\c\/d\b\f\n\r\t"}"#, "user_id"),
            subject("a\"b\\c/d\u{8}\u{c}\n\r\t")
        );
        assert_eq!(
            cls(r#"{"user_id":"\ud83d\ude00"}"#, "user_id"),
            subject("😀")
        );
        assert_eq!(
            cls(r#"{"user_id":"x\uD83D\uDE00y"}"#, "user_id"),
            subject("x😀y")
        );
        assert_eq!(
            cls(r#"{"user_id":"héllo 中"}"#, "user_id"),
            subject("héllo 中")
        );
        assert_eq!(cls(r#"{"user_id":"\u0000"}"#, "user_id"), subject("\0"));
    }

    #[test]
    fn borrows_unless_unescaping() {
        let line = br#"{"user_id":"u1","n":{"id":-12}}"#;
        assert!(matches!(
            classify(line, &path("user_id")),
            Line::Subject(Cow::Borrowed("u1"))
        ));
        assert!(matches!(
            classify(line, &path("n.id")),
            Line::Subject(Cow::Borrowed("-12"))
        ));
        assert!(matches!(
            classify(br#"{"user_id":"u\n1"}"#, &path("user_id")),
            Line::Subject(Cow::Owned(_))
        ));
    }

    #[test]
    fn integer_subjects() {
        assert_eq!(cls(r#"{"user_id":42}"#, "user_id"), subject("42"));
        assert_eq!(cls(r#"{"user_id":-7}"#, "user_id"), subject("-7"));
        assert_eq!(cls(r#"{"user_id":-0}"#, "user_id"), subject("0"));
        assert_eq!(cls(r#"{"user_id":0}"#, "user_id"), subject("0"));
        let big = "1234567890123456789012345678901234567890";
        assert_eq!(
            cls(&format!(r#"{{"user_id":{big}}}"#), "user_id"),
            subject(big)
        );
        let neg = format!("-{big}");
        assert_eq!(
            cls(&format!(r#"{{"user_id":{neg} }}"#), "user_id"),
            subject(&neg)
        );
    }

    #[test]
    fn invalid_leaves() {
        for value in [
            "4.2",
            "1e3",
            "1E+2",
            "-2.5e-7",
            "0.0",
            "-0.0",
            "true",
            "false",
            "{}",
            r#"{"id":1}"#,
            "[]",
            r#"["u1"]"#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""a\ud83dz""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\ud83d""#,
            r#""\ude00\ud83d""#,
        ] {
            let line = format!(r#"{{"user_id":{value}}}"#);
            assert_eq!(cls(&line, "user_id"), Line::Invalid, "{line}");
        }
    }

    #[test]
    fn missing_subjects() {
        for (line, p) in [
            (r#"{}"#, "user_id"),
            (r#"{"other":"u1"}"#, "user_id"),
            (r#"{"user_id":null}"#, "user_id"),
            (r#"{"user_id":""}"#, "user_id"),
            (r#"{"meta":"x"}"#, "meta.id"),
            (r#"{"meta":null}"#, "meta.id"),
            (r#"{"meta":42}"#, "meta.id"),
            (r#"{"meta":[{"id":"u1"}]}"#, "meta.id"),
            (r#"{"meta":{"author":{}}}"#, "meta.author.id"),
            (r#"{"meta":{"id":"u1"}}"#, "id"),
            (r#"{"User_id":"u1"}"#, "user_id"),
        ] {
            assert_eq!(cls(line, p), Line::Missing, "{line} {p}");
        }
    }

    #[test]
    fn nested_paths() {
        let line = r#"{"id":"d","meta":{"lang":"en","author":{"name":"n","id":"a7"},"id":"m"}}"#;
        assert_eq!(cls(line, "meta.author.id"), subject("a7"));
        assert_eq!(cls(line, "meta.id"), subject("m"));
        assert_eq!(cls(line, "id"), subject("d"));
        assert_eq!(cls(line, "meta.author"), Line::Invalid);
        assert_eq!(cls(line, "meta.author.id.x"), Line::Missing);
        assert_eq!(cls(line, "meta.lang.x"), Line::Missing);
        assert_eq!(cls(r#"{"a":{"b":{"c":5}}}"#, "a.b.c"), subject("5"));
    }

    #[test]
    fn escaped_keys() {
        assert_eq!(cls(r#"{"user\u005fid":"u1"}"#, "user_id"), subject("u1"));
        assert_eq!(cls(r#"{"\u0075ser_id":"u1"}"#, "user_id"), subject("u1"));
        assert_eq!(cls(r#"{"m\u00e9ta":{"id":1}}"#, "méta.id"), subject("1"));
        assert_eq!(cls(r#"{"\ud83d\ude00":1}"#, "😀"), subject("1"));
        assert_eq!(cls(r#"{"user\u005fidx":"u1"}"#, "user_id"), Line::Missing);
        assert_eq!(cls(r#"{"user\u005f":"u1"}"#, "user_id"), Line::Missing);
        assert_eq!(cls(r#"{"\ud800":"u1"}"#, "user_id"), Line::Missing);
        assert_eq!(cls(r#"{"a\"b":"u1"}"#, "a\"b"), subject("u1"));
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(
            cls(r#"{"a":{"b":1},"a":{"b":2}}"#, "a.b"),
            ambiguous(&["1", "2"])
        );
        assert_eq!(
            cls(r#"{"a":{"b":1,"b":"x"}}"#, "a.b"),
            ambiguous(&["1", "x"])
        );
        assert_eq!(
            cls(r#"{"x":1,"x":2,"user_id":"u"}"#, "user_id"),
            subject("u")
        );
        assert_eq!(
            cls(r#"{"user_id":"a","user\u005fid":"b"}"#, "user_id"),
            ambiguous(&["a", "b"])
        );
        assert_eq!(
            cls(r#"{"user_id":"a","user_id":"a"}"#, "user_id"),
            ambiguous(&["a", "a"])
        );
        assert_eq!(
            cls(r#"{"user_id":null,"user_id":"","user_id":1.5}"#, "user_id"),
            ambiguous(&[])
        );
        assert_eq!(
            cls(r#"{"user_id":true,"user_id":"u2"}"#, "user_id"),
            ambiguous(&["u2"])
        );
        assert_eq!(cls(r#"{"a":1,"a":{"b":2}}"#, "a.b"), ambiguous(&["2"]));
        assert_eq!(cls(r#"{"a":{"x":1},"a":{"x":2}}"#, "a.b"), ambiguous(&[]));
        assert_eq!(cls(r#"{"a":"x","a":"y"}"#, "a.b"), ambiguous(&[]));
        assert_eq!(
            cls(
                r#"{"a":{"b":1,"c":{"c":1,"c":2}},"z":{"b":3,"b":4}}"#,
                "a.b"
            ),
            subject("1")
        );
        assert_eq!(cls(r#"{"a":{"b":1,"b":2}}"#, "a"), Line::Invalid);
        assert_eq!(
            cls(
                r#"{"a":{"b":{"c":"p"}},"a":{"b":{"c":"q","c":7},"b":null}}"#,
                "a.b.c"
            ),
            ambiguous(&["p", "q", "7"])
        );
        assert_eq!(
            cls(r#"{"a":[1],"a":{"b":"\u0041"}}"#, "a.b"),
            ambiguous(&["A"])
        );
    }

    #[test]
    fn lone_surrogates() {
        assert_eq!(
            cls(
                r#"{"x":"\ud800","user_id":"u","y":{"z":"\udfff\u0041"}}"#,
                "user_id"
            ),
            subject("u")
        );
        assert_eq!(cls(r#"{"user_id":"\ud800"}"#, "user_id"), Line::Invalid);
        assert_eq!(cls(r#"{"user_id":"\ud800\n"}"#, "user_id"), Line::Invalid);
    }

    #[test]
    fn whitespace_variations() {
        for line in [
            "{\"user_id\":\"u1\"}\r",
            " {\"user_id\":\"u1\"} ",
            "\t{ \"user_id\" : \"u1\" }\r",
            "{\n\"a\" :\t[ 1 , { } , [ ] ] ,\r\n \"user_id\"\n:\n\"u1\"\n}\r\n",
            "\r\n{\"user_id\":\"u1\"   }\t\r",
        ] {
            assert_eq!(cls(line, "user_id"), subject("u1"), "{line:?}");
        }
    }

    #[test]
    fn malformed_lines() {
        for line in [
            "[]",
            r#"["user_id"]"#,
            r#""user_id""#,
            "42",
            "null",
            "true",
            "}",
            "{",
            "{\"user_id\":\"u1\"",
            "{\"user_id\":\"u1\",",
            "{\"user_id\":",
            "{\"user_id\"",
            "{\"user_id",
            "{\"user_id\":\"u1",
            r#"{"user_id":"u1",}"#,
            r#"{"a":[1,2,],"user_id":"u1"}"#,
            r#"{"a":[,1],"user_id":"u1"}"#,
            r#"{,"user_id":"u1"}"#,
            r#"{"user_id":"u1",,"b":1}"#,
            r#"{"user_id":"u1" "b":1}"#,
            r#"{"user_id" "u1"}"#,
            r#"{"user_id"::"u1"}"#,
            r#"{"user_id":}"#,
            r#"{"user_id":01}"#,
            r#"{"x":01,"user_id":"u1"}"#,
            r#"{"x":-01,"user_id":"u1"}"#,
            r#"{"x":+1,"user_id":"u1"}"#,
            r#"{"x":.5,"user_id":"u1"}"#,
            r#"{"x":1.,"user_id":"u1"}"#,
            r#"{"x":1e,"user_id":"u1"}"#,
            r#"{"x":1e+,"user_id":"u1"}"#,
            r#"{"x":-,"user_id":"u1"}"#,
            r#"{"x":NaN,"user_id":"u1"}"#,
            r#"{"x":Infinity,"user_id":"u1"}"#,
            r#"{"x":-Infinity,"user_id":"u1"}"#,
            r#"{"x":0x10,"user_id":"u1"}"#,
            r#"{"x":tru,"user_id":"u1"}"#,
            r#"{"x":True,"user_id":"u1"}"#,
            r#"{"x":nul,"user_id":"u1"}"#,
            r#"{"x":nulls,"user_id":"u1"}"#,
            r#"{"x":"\x","user_id":"u1"}"#,
            r#"{"x":"\u12G4","user_id":"u1"}"#,
            r#"{"x":"\u12","user_id":"u1"}"#,
            r#"{"x":"\U0041","user_id":"u1"}"#,
            r#"{"x":"\'","user_id":"u1"}"#,
            "{\"x\":\"a\tb\",\"user_id\":\"u1\"}",
            "{\"x\":\"a\u{1}b\",\"user_id\":\"u1\"}",
            "{\"user_id\":\"u\u{1f}1\"}",
            "{\"us\ner_id\":\"u1\"}",
            "{\"user_id\":\"u1\"}x",
            "{\"user_id\":\"u1\"}{}",
            "{\"user_id\":\"u1\"},",
            "{\"user_id\":\"u1\"}}",
            "{\"user_id\":\"u1\"}\u{0}",
            r#"{"a":[}"#,
            r#"{"a":{]}"#,
            r#"{"a":[1}]"#,
            r#"{'user_id':'u1'}"#,
            r#"{user_id:"u1"}"#,
            r#"{"user_id":"u1"]"#,
            "\u{feff}{\"user_id\":\"u1\"}",
            "{\"user_id\":\"u1\"}\u{a0}",
            "{\u{b}\"user_id\":\"u1\"}",
        ] {
            assert_eq!(cls(line, "user_id"), Line::Malformed, "{line:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        for line in [
            &b"{\"user_id\":\"u\xff1\"}"[..],
            b"{\"x\":\"\xc3\",\"user_id\":\"u1\"}",
            b"{\"x\":\"\xc0\xaf\",\"user_id\":\"u1\"}",
            b"{\"x\":\"\xed\xa0\x80\",\"user_id\":\"u1\"}",
            b"{\"user_id\":\"u1\"}\xff",
            b"\xff",
        ] {
            assert_eq!(classify(line, &path("user_id")), Line::Malformed);
        }
    }

    #[test]
    fn hostile_nesting_does_not_overflow() {
        let deep = vec![b'['; 1_000_000];
        assert_eq!(classify(&deep, &path("a")), Line::Malformed);

        let mut line = b"{\"x\":".to_vec();
        line.extend(std::iter::repeat_n(&b"{\"a\":["[..], 200_000).flatten());
        assert_eq!(classify(&line, &path("x.a")), Line::Malformed);

        let n = 100_000;
        let mut line = b"{\"user_id\":\"u\",\"x\":".to_vec();
        line.extend(std::iter::repeat_n(&b"[{\"a\":"[..], n).flatten());
        line.extend_from_slice(b"1");
        line.extend(std::iter::repeat_n(&b"}]"[..], n).flatten());
        line.push(b'}');
        assert_eq!(classify(&line, &path("user_id")), subject("u"));
        line.pop();
        line.extend_from_slice(b"]}");
        assert_eq!(classify(&line, &path("user_id")), Line::Malformed);
    }

    #[test]
    fn specials_at_every_offset_of_long_strings() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"\\\"", Some("\"")),
            (b"\\\\", Some("\\")),
            (b"\\u0041", Some("A")),
            (b"\\ud83d\\ude00", Some("😀")),
            ("é".as_bytes(), Some("é")),
            ("中😀".as_bytes(), Some("中😀")),
            (b"\x7f", Some("\x7f")),
            (b"\x01", None),
            (b"\t", None),
            (b"\xff", None),
            (b"\xc3", None),
            (b"\xed\xa0\x80", None),
            (b"\\x", None),
            (b"\\u12", None),
        ];
        for len in 0..100 {
            for (special, decoded) in cases {
                let prefix = "x".repeat(len);
                let suffix = "y".repeat(len % 13);
                let pad = "p".repeat(len % 7);
                let mut line = format!(r#"{{"p":"{pad}","user_id":"{prefix}"#).into_bytes();
                line.extend_from_slice(special);
                line.extend_from_slice(format!(r#"{suffix}","z":"é{prefix}"}}"#).as_bytes());
                let want = match decoded {
                    Some(d) => Line::Subject(Cow::Owned(format!("{prefix}{d}{suffix}"))),
                    None => Line::Malformed,
                };
                assert_eq!(classify(&line, &path("user_id")), want, "{line:?}");
                let off_path = classify(&line, &path("z"));
                assert_eq!(off_path == Line::Malformed, decoded.is_none(), "{line:?}");
            }
        }
    }

    #[test]
    fn find_special_agrees_with_bytewise_scan() {
        const BYTES: &[u8] = &[
            b' ', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff,
        ];
        let mut rng = Rng(42);
        for _ in 0..3_000 {
            let len = rng.below(120);
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.chance(85) {
                        b'a'
                    } else {
                        rng.pick(BYTES)
                    }
                })
                .collect();
            for stop_non_ascii in [false, true] {
                for i in 0..=len + 1 {
                    let want = buf
                        .iter()
                        .enumerate()
                        .skip(i)
                        .find(|&(_, &c)| {
                            c == b'"' || c == b'\\' || c < 0x20 || (stop_non_ascii && c >= 0x80)
                        })
                        .map_or(len, |(k, _)| k);
                    assert_eq!(find_special(&buf, i, stop_non_ascii), want, "{buf:?} {i}");
                    let high = if stop_non_ascii { 0x80 } else { 0 };
                    assert_eq!(
                        find_special_in_groups::<4>(&buf, i, high),
                        want,
                        "{buf:?} {i}"
                    );
                    assert_eq!(
                        find_special_in_groups::<8>(&buf, i, high),
                        want,
                        "{buf:?} {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn utf8_is_checked_wherever_it_first_appears() {
        let p = path("user_id");
        for (line, want) in [
            (&b"{\"user_id\":\"h\xc3\xa9\"}"[..], subject("hé")),
            (
                b"{\"x\":\"\xc3\xa9\",\"user_id\":\"u\xe4\xb8\xad\"}",
                subject("u中"),
            ),
            (b"{\"\xc3\xa9\":1,\"user_id\":\"u\"}", subject("u")),
            (
                b"{\"x\":\"\xc3\xa9\",\"user_id\":\"u\xff\"}",
                Line::Malformed,
            ),
            (
                b"{\"x\":\"\xc3\xa9\",\"user_id\":\"u\"}\xff",
                Line::Malformed,
            ),
            (b"{\"user_id\":\"u\",\"x\":\"\xc3\"}", Line::Malformed),
            (b"{\"user_id\xc3\":\"u\"}", Line::Malformed),
            (b"{\xc3\xa9:1,\"user_id\":\"u\"}", Line::Malformed),
            (b"{\"user_id\":\"u\"}\xc3\xa9", Line::Malformed),
            (b"{\"user_id\":\"u\"} \xc2\xa0", Line::Malformed),
        ] {
            assert_eq!(classify(line, &p), want, "{line:?}");
        }
    }

    #[test]
    fn any_token_finds_strings_and_integers() {
        let collect = |line: &[u8]| {
            let mut seen = Vec::new();
            any_token(line, |t| {
                seen.push(t.to_owned());
                false
            });
            seen
        };
        assert_eq!(
            collect(br#"{"user_id":"u1","n":-0,"m":[42,4.2,1e3,-7]}"#),
            ["user_id", "u1", "n", "0", "m", "42", "-7"]
        );
        assert_eq!(collect(br#"{"a":"\u0041\ud83d\ude00\n""#), ["a", "A😀\n"]);
        assert_eq!(
            collect(br#"garbage "x\q\ud800" 12abc "open"#),
            ["x\\q\u{FFFD}", "12"]
        );
        assert_eq!(collect(b"\"\xffz\" -- - 7"), ["\u{FFFD}z", "7"]);
        assert_eq!(collect(br#"{"a":"b\"c","d":"#), ["a", "b\"c", "d"]);
        assert_eq!(collect(br#"{"a":"unterminated \" 5"#), ["a"]);
        assert_eq!(collect(b""), Vec::<String>::new());

        let mut calls = 0;
        assert!(any_token(br#"["a","b","c"]"#, |t| {
            calls += 1;
            t == "b"
        }));
        assert_eq!(calls, 2);
        assert!(!any_token(br#"{"user_id":"u1"#, |t| t == "u1"));
        assert!(any_token(
            br#"{"user_id":123456789012345678901234567890,"#,
            |t| { t == "123456789012345678901234567890" }
        ));
    }

    mod reference {
        //! An independent reference built on serde_json. Objects keep their entries in order,
        //! duplicates included, with keys decoded and values left as raw text, so numbers keep
        //! their digits. serde_json validates a raw value without decoding its strings, so a
        //! lone surrogate escape there is accepted, as RFC 8259 allows; decoding a key or a
        //! value with one fails.
        use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
        use serde_json::value::RawValue;
        use std::fmt;

        pub struct Object(pub Vec<(String, Box<RawValue>)>);

        impl<'de> Deserialize<'de> for Object {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map(ObjectVisitor)
            }
        }

        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Object(entries))
            }
        }
    }

    use reference::Object;

    /// What `classify` should say, from serde_json's view of the line. `None` when serde_json
    /// cannot tell because an object it must decode has a key with a lone surrogate escape
    /// (which RFC 8259 allows but serde_json rejects): then only validity is checked.
    fn expected(line: &[u8], segments: &[String]) -> Option<Line<'static>> {
        if line
            .iter()
            .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Some(Line::Blank);
        }
        let Ok(root) = serde_json::from_slice::<Object>(line) else {
            return match serde_json::from_slice::<Object>(&without_surrogates(line)) {
                Ok(_) => None,
                Err(_) => Some(Line::Malformed),
            };
        };
        let mut leaves = Vec::new();
        let mut ambiguous = false;
        walk(&root, segments, &mut leaves, &mut ambiguous)?;
        Some(if ambiguous {
            Line::Ambiguous(
                leaves
                    .into_iter()
                    .filter_map(|l| match l {
                        Line::Subject(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            )
        } else {
            leaves.pop().unwrap_or(Line::Missing)
        })
    }

    /// Collects, in document order, what each occurrence of `segments` in `object` holds.
    /// `None` when an object on the way cannot be decoded (see [`expected`]).
    fn walk(
        object: &Object,
        segments: &[String],
        leaves: &mut Vec<Line<'static>>,
        ambiguous: &mut bool,
    ) -> Option<()> {
        let (first, rest) = segments.split_first()?;
        let hits: Vec<&str> = object
            .0
            .iter()
            .filter(|(k, _)| k == first)
            .map(|(_, v)| v.get().trim())
            .collect();
        if hits.len() > 1 {
            *ambiguous = true;
        }
        for raw in hits {
            let first_byte = raw.bytes().next();
            if rest.is_empty() {
                leaves.push(match first_byte {
                    Some(b'"') => match serde_json::from_str::<String>(raw) {
                        Ok(s) if s.is_empty() => Line::Missing,
                        Ok(s) => Line::Subject(Cow::Owned(s)),
                        Err(_) => Line::Invalid,
                    },
                    Some(b'-' | b'0'..=b'9') if raw.contains(['.', 'e', 'E']) => Line::Invalid,
                    Some(b'-' | b'0'..=b'9') if raw == "-0" => Line::Subject(Cow::Borrowed("0")),
                    Some(b'-' | b'0'..=b'9') => Line::Subject(Cow::Owned(raw.to_owned())),
                    Some(b'n') => Line::Missing,
                    _ => Line::Invalid,
                });
            } else if first_byte == Some(b'{') {
                let inner = serde_json::from_str::<Object>(raw).ok()?;
                walk(&inner, rest, leaves, ambiguous)?;
            }
        }
        Some(())
    }

    /// Rewrites every `\uD800`..`\uDFFF` escape inside strings to `\u0058`, which has the same
    /// grammar class, so serde_json can judge the validity of the rest of the line.
    fn without_surrogates(line: &[u8]) -> Vec<u8> {
        let mut out = line.to_vec();
        let mut in_string = false;
        let mut i = 0;
        while i < out.len() {
            match out[i] {
                b'"' => in_string = !in_string,
                b'\\' if in_string => {
                    if out.get(i + 1) == Some(&b'u') {
                        if let Some(unit) = hex4(out.get(i + 2..i + 6)) {
                            if (0xD800..0xE000).contains(&unit) {
                                out[i + 2..i + 6].copy_from_slice(b"0058");
                            }
                        }
                    }
                    i += 1;
                }
                _ => {}
            }
            i += 1;
        }
        out
    }

    /// Keys for generated objects, weighted towards the tested path segments.
    const KEYS: &[&str] = &[
        "user_id", "user_id", "user_id", "a", "a", "b", "b", "c", "meta", "meta", "author", "id",
        "id", "x", "", "é", "a.b", "😀",
    ];

    /// Usually nothing, sometimes one or two pieces of JSON whitespace.
    fn gen_ws(rng: &mut Rng, out: &mut String) {
        if rng.chance(80) {
            return;
        }
        for _ in 0..=rng.below(2) {
            out.push_str(rng.pick(&[" ", "\t", "\n", "\r", "  "]));
        }
    }

    /// `value` as a JSON string literal, escaped in one of the valid ways chosen at random.
    fn gen_string(rng: &mut Rng, value: &str, out: &mut String) {
        out.push('"');
        for c in value.chars() {
            let escape_all = rng.chance(12);
            match c {
                '"' if rng.chance(70) => out.push_str("\\\""),
                '\\' if rng.chance(70) => out.push_str("\\\\"),
                '/' if rng.chance(50) => out.push_str("\\/"),
                '\n' if rng.chance(50) => out.push_str("\\n"),
                '\t' if rng.chance(50) => out.push_str("\\t"),
                '\u{8}' if rng.chance(50) => out.push_str("\\b"),
                '\u{c}' if rng.chance(50) => out.push_str("\\f"),
                '\r' if rng.chance(50) => out.push_str("\\r"),
                c if c < ' ' || c == '"' || c == '\\' || escape_all => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        if rng.chance(50) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        } else {
                            out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    /// A short (sometimes empty or long) text mixing plain, special and non-ASCII characters.
    fn gen_text(rng: &mut Rng) -> String {
        const CHARS: &[char] = &[
            'a', 'b', 'u', '1', '2', '0', ' ', '"', '\\', '/', '\n', '\t', '\r', '\u{8}', '\u{c}',
            '\u{1}', '\u{1f}', '\u{7f}', 'é', '中', '😀', '\u{2028}', '\u{0}', '.',
        ];
        let len = match rng.below(10) {
            0 => 0,
            1 => 20 + rng.below(60),
            _ => 1 + rng.below(8),
        };
        (0..len).map(|_| rng.pick(CHARS)).collect()
    }

    /// A valid JSON number: small, zero, negative zero, huge, fraction or exponent.
    fn gen_number(rng: &mut Rng) -> String {
        let digits = |rng: &mut Rng, n: usize| -> String {
            let mut s = String::new();
            s.push(char::from(b'1' + rng.below(9) as u8));
            for _ in 1..n {
                s.push(char::from(b'0' + rng.below(10) as u8));
            }
            s
        };
        match rng.below(12) {
            0 => "0".to_owned(),
            1 => "-0".to_owned(),
            2 => {
                let n = 19 + rng.below(30);
                digits(rng, n)
            }
            3 => {
                let n = 19 + rng.below(30);
                format!("-{}", digits(rng, n))
            }
            4 => format!("{}.{}", rng.below(100), rng.below(1000)),
            5 => format!("-0.{}", rng.below(100)),
            6 => format!("{}e{}", rng.below(10), rng.below(20)),
            7 => format!(
                "{}{}E{}{}",
                rng.pick(&["", "-"]),
                rng.below(10),
                rng.pick(&["", "+", "-"]),
                rng.below(300)
            ),
            8 => format!("-{}", rng.below(100_000)),
            _ => {
                let n = 1 + rng.below(6);
                digits(rng, n)
            }
        }
    }

    /// A string value; sometimes with a lone surrogate escape, which only values may hold
    /// (serde_json rejects it in the keys it decodes).
    fn gen_string_value(rng: &mut Rng, out: &mut String) {
        let text = gen_text(rng);
        if !rng.chance(6) {
            gen_string(rng, &text, out);
            return;
        }
        let lone = rng.pick(&["\\ud800", "\\uDBFF", "\\udc00", "\\uDFFF", "\\ud83d\\n"]);
        let mut chars = text.chars();
        let head: String = chars.by_ref().take(rng.below(3)).collect();
        let tail: String = chars.collect();
        gen_string(rng, &head, out);
        out.pop();
        out.push_str(lone);
        let start = out.len();
        gen_string(rng, &tail, out);
        out.remove(start);
    }

    /// Any JSON value; containers only while `depth` is below 5.
    fn gen_value(rng: &mut Rng, depth: usize, out: &mut String) {
        gen_ws(rng, out);
        let choice = if depth >= 5 {
            2 + rng.below(6)
        } else {
            rng.below(8)
        };
        match choice {
            0 | 1 => gen_object(rng, depth + 1, out),
            2 => {
                out.push('[');
                let n = rng.below(4);
                if n == 0 {
                    gen_ws(rng, out);
                }
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    gen_value(rng, depth + 1, out);
                }
                out.push(']');
            }
            3 | 4 => {
                gen_string_value(rng, out);
            }
            5 | 6 => out.push_str(&gen_number(rng)),
            _ => out.push_str(rng.pick(&["true", "false", "null", "\"\""])),
        }
        gen_ws(rng, out);
    }

    /// An object of up to five random members.
    fn gen_object(rng: &mut Rng, depth: usize, out: &mut String) {
        out.push('{');
        let n = rng.below(6);
        if n == 0 {
            gen_ws(rng, out);
        }
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            gen_ws(rng, out);
            let key = rng.pick(KEYS);
            gen_string(rng, key, out);
            gen_ws(rng, out);
            out.push(':');
            gen_value(rng, depth, out);
        }
        out.push('}');
    }

    /// An object holding `segments` as a chain of nested keys (sometimes twice), among
    /// random entries.
    fn gen_planted(rng: &mut Rng, segments: &[&str], out: &mut String) {
        let Some((first, rest)) = segments.split_first() else {
            match rng.below(4) {
                0 => gen_value(rng, 4, out),
                1 => out.push_str(&gen_number(rng)),
                _ => {
                    gen_string_value(rng, out);
                }
            }
            return;
        };
        out.push('{');
        let before = rng.below(3);
        let copies = if rng.chance(15) { 2 } else { 1 };
        let after = rng.below(3);
        for i in 0..before + copies + after {
            if i > 0 {
                out.push(',');
            }
            gen_ws(rng, out);
            if i >= before && i < before + copies {
                gen_string(rng, first, out);
                out.push(':');
                gen_ws(rng, out);
                if rng.chance(85) {
                    gen_planted(rng, rest, out);
                } else {
                    gen_value(rng, 4, out);
                }
            } else {
                let key = rng.pick(KEYS);
                gen_string(rng, key, out);
                out.push(':');
                gen_value(rng, 3, out);
            }
        }
        out.push('}');
    }

    /// A test line: mostly a valid object (often holding one of the tested paths), sometimes
    /// another top-level value or junk bytes, and in nearly half the cases then damaged by
    /// [`mutate`].
    fn gen_line(rng: &mut Rng) -> Vec<u8> {
        if rng.chance(3) {
            const JUNK: &[u8] = b"{}[]:,\"\\ \tnul0-9.eEtrfasu\xff\xc3\xa9\x01";
            return (0..rng.below(40)).map(|_| rng.pick(JUNK)).collect();
        }
        let mut out = String::new();
        gen_ws(rng, &mut out);
        if rng.chance(5) {
            gen_value(rng, 4, &mut out);
        } else if rng.chance(60) {
            let planted = rng.pick(&[
                &["user_id"][..],
                &["a", "b"],
                &["meta", "author", "id"],
                &["a", "b", "c"],
            ]);
            gen_planted(rng, planted, &mut out);
        } else {
            gen_object(rng, 0, &mut out);
        }
        gen_ws(rng, &mut out);
        let mut line = out.into_bytes();
        if rng.chance(45) {
            for _ in 0..=rng.below(3) {
                mutate(rng, &mut line);
            }
        }
        line
    }

    /// Deletes, inserts, overwrites or duplicates bytes, or truncates the line.
    fn mutate(rng: &mut Rng, line: &mut Vec<u8>) {
        const PUNCT: &[u8] = b"\",{}[]:\\ 0-.eu";
        let at = rng.below(line.len() + 1);
        match rng.below(6) {
            0 if at < line.len() => {
                line.remove(at);
            }
            1 => line.insert(at, rng.pick(PUNCT)),
            2 => line.insert(at, rng.next() as u8),
            3 => line.truncate(at),
            4 if at < line.len() => line[at] = rng.pick(PUNCT),
            _ => {
                let end = (at + rng.below(8)).min(line.len());
                let chunk = line[at..end].to_vec();
                let to = rng.below(line.len() + 1);
                line.splice(to..to, chunk);
            }
        }
    }

    #[test]
    fn differential_against_serde_json() {
        let paths: Vec<SubjectPath> = ["user_id", "a", "a.b", "meta.author.id", "a.b.c", "é"]
            .iter()
            .map(|p| path(p))
            .collect();
        let mut rng = Rng(0x5EED_C0DE);
        let mut tally = std::collections::BTreeMap::<&str, usize>::new();
        for _ in 0..30_000 {
            let line = gen_line(&mut rng);
            for p in &paths {
                let got = classify(&line, p);
                let shown = String::from_utf8_lossy(&line);
                let kind = match expected(&line, &p.segments) {
                    Some(want) => {
                        assert_eq!(got, want, "line {shown:?} path {:?}", p.segments);
                        match want {
                            Line::Blank => "blank",
                            Line::Malformed => "malformed",
                            Line::Missing => "missing",
                            Line::Invalid => "invalid",
                            Line::Ambiguous(ids) if ids.is_empty() => "ambiguous-empty",
                            Line::Ambiguous(_) => "ambiguous",
                            Line::Subject(_) => "subject",
                        }
                    }
                    None => {
                        assert!(
                            !matches!(got, Line::Malformed | Line::Blank),
                            "line {shown:?}: {got:?}"
                        );
                        "undecided (lone surrogate in a decoded key)"
                    }
                };
                *tally.entry(kind).or_default() += 1;
                let ids: Vec<Cow<str>> = match got {
                    Line::Subject(id) => vec![id],
                    Line::Ambiguous(ids) => ids,
                    _ => Vec::new(),
                };
                for id in ids {
                    assert!(
                        any_token(&line, |t| t == id),
                        "any_token misses {id:?} in {shown:?}"
                    );
                }
            }
        }
        println!("{tally:?}");
        for kind in [
            "blank",
            "malformed",
            "missing",
            "invalid",
            "ambiguous-empty",
            "ambiguous",
            "subject",
        ] {
            assert!(
                tally.get(kind).copied().unwrap_or(0) >= 20,
                "{kind}: {tally:?}"
            );
        }
    }

    /// `n` typical ~750-byte lines, each followed by `\n`, in one buffer (as a reader holds
    /// them).
    fn typical_lines(n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "the", "consent", "data", "model", "training", "quick", "brown", "fox", "jumps",
            "over", "lazy", "dog", "forum", "post", "reply", "thanks", "question", "answer",
        ];
        let mut rng = Rng(7);
        let mut buf = Vec::new();
        for i in 0..n {
            let mut text = String::new();
            while text.len() < 600 {
                text.push_str(rng.pick(WORDS));
                text.push(' ');
            }
            let line = format!(
                r#"{{"id":"doc-{i:010}","user_id":"u{:08}","source":"forum","created_at":"2025-03-01T10:00:00Z","text":"{text}","meta":{{"lang":"en","tokens":150}}}}"#,
                rng.below(100_000_000)
            );
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
        buf
    }

    type Contender<'p> = (&'static str, Box<dyn Fn(&[u8]) -> bool + 'p>);

    /// Prints, for each contender, its best time over `rounds` rounds of `passes` passes on
    /// every line of `buf` (contenders take turns within a round, so machine noise hits all
    /// of them alike).
    fn race(buf: &[u8], rounds: usize, passes: usize, contenders: &[Contender]) {
        let lines: Vec<&[u8]> = buf
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut best = vec![f64::INFINITY; contenders.len()];
        for _ in 0..rounds {
            for ((name, f), best) in contenders.iter().zip(&mut best) {
                let start = std::time::Instant::now();
                let mut found = 0usize;
                for _ in 0..passes {
                    for line in &lines {
                        found += usize::from(f(std::hint::black_box(line)));
                    }
                }
                assert_eq!(found, lines.len() * passes, "{name}");
                *best = best.min(start.elapsed().as_secs_f64());
            }
        }
        for ((name, _), best) in contenders.iter().zip(best) {
            let mb_per_s = (buf.len() * passes) as f64 / best / 1e6;
            println!("  {name:<40} {mb_per_s:>6.0} MB/s");
        }
    }

    #[derive(serde::Deserialize)]
    struct Record<'a> {
        #[serde(borrow)]
        user_id: Option<Cow<'a, str>>,
    }

    /// Throughput check: `cargo test --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore]
    fn throughput() {
        use serde_json::value::RawValue;
        use std::collections::HashMap;
        let p = path("user_id");
        let contenders: Vec<Contender> = vec![
            (
                "scan::classify",
                Box::new(|l| matches!(classify(l, &p), Line::Subject(_))),
            ),
            (
                "serde_json Value + get",
                Box::new(|l| {
                    serde_json::from_slice::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v.get("user_id").and_then(|id| id.as_str().map(str::len)))
                        .is_some()
                }),
            ),
            (
                "serde_json HashMap<String, &RawValue>",
                Box::new(|l| {
                    serde_json::from_slice::<HashMap<String, &RawValue>>(l)
                        .ok()
                        .and_then(|m| {
                            let raw = m.get("user_id")?;
                            serde_json::from_str::<Cow<str>>(raw.get()).ok()
                        })
                        .is_some()
                }),
            ),
            (
                "serde_json derived borrowed struct",
                Box::new(|l| {
                    serde_json::from_slice::<Record>(l)
                        .ok()
                        .and_then(|r| r.user_id)
                        .is_some()
                }),
            ),
        ];
        let all = typical_lines(100_000);
        println!(
            "100,000 lines, {:.1} MB, one pass per round:",
            all.len() as f64 / 1e6
        );
        race(&all, 5, 1, &contenders);
        let hot = &all[..all.len() / 100];
        let hot = &hot[..hot.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1)];
        println!(
            "first 1% of the lines ({:.2} MB, cache-resident), 20 passes per round:",
            hot.len() as f64 / 1e6
        );
        race(hot, 10, 20, &contenders);
    }
}
