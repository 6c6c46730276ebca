//! Tokens of the CEL subset, each with the byte range it covers in the source.

/// An error found while reading the source, before it is turned into a
/// [`CelError`](super::CelError) with a line and column.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceError {
    pub message: String,
    pub offset: usize,
}

impl SourceError {
    pub fn new(message: impl Into<String>, offset: usize) -> Self {
        SourceError {
            message: message.into(),
            offset,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An integer literal's magnitude; the range check (and `-9223372036854775808`) is the checker's.
    Int(u64),
    Uint(u64),
    Double(f64),
    Str(String),
    Ident,
    True,
    False,
    Null,
    In,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Dot,
    Comma,
    Colon,
    Question,
    Not,
    Minus,
    Plus,
    Star,
    Slash,
    Percent,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

/// Splits `src` into tokens; the last one is always [`Tok::Eof`] at `src.len()`.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, SourceError> {
    let mut lexer = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'s> {
    src: &'s str,
    bytes: &'s [u8],
    pos: usize,
    tokens: Vec<Token>,
}

impl Lexer<'_> {
    fn peek_at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn push(&mut self, tok: Tok, start: usize, end: usize) {
        self.tokens.push(Token { tok, start, end });
        self.pos = end;
    }

    fn run(&mut self) -> Result<(), SourceError> {
        loop {
            self.skip_space_and_comments();
            let start = self.pos;
            let Some(c) = self.peek_at(start) else {
                self.push(Tok::Eof, start, start);
                return Ok(());
            };
            let next = self.peek_at(start + 1);
            let two = |tok| (tok, 2);
            let (tok, len) = match c {
                b'(' => (Tok::LParen, 1),
                b')' => (Tok::RParen, 1),
                b'[' => (Tok::LBracket, 1),
                b']' => (Tok::RBracket, 1),
                b'{' => (Tok::LBrace, 1),
                b'}' => (Tok::RBrace, 1),
                b',' => (Tok::Comma, 1),
                b':' => (Tok::Colon, 1),
                b'?' => (Tok::Question, 1),
                b'+' => (Tok::Plus, 1),
                b'-' => (Tok::Minus, 1),
                b'*' => (Tok::Star, 1),
                b'/' => (Tok::Slash, 1),
                b'%' => (Tok::Percent, 1),
                b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                    self.number(start)?;
                    continue;
                }
                b'.' => (Tok::Dot, 1),
                b'!' if next == Some(b'=') => two(Tok::Ne),
                b'!' => (Tok::Not, 1),
                b'<' if next == Some(b'=') => two(Tok::Le),
                b'<' => (Tok::Lt, 1),
                b'>' if next == Some(b'=') => two(Tok::Ge),
                b'>' => (Tok::Gt, 1),
                b'=' if next == Some(b'=') => two(Tok::EqEq),
                b'=' => {
                    return Err(SourceError::new(
                        "unexpected '='; use '==' to compare values",
                        start,
                    ))
                }
                b'&' if next == Some(b'&') => two(Tok::AndAnd),
                b'&' => {
                    return Err(SourceError::new(
                        "unexpected '&'; use '&&' for a logical and",
                        start,
                    ))
                }
                b'|' if next == Some(b'|') => two(Tok::OrOr),
                b'|' => {
                    return Err(SourceError::new(
                        "unexpected '|'; use '||' for a logical or",
                        start,
                    ))
                }
                b'"' | b'\'' => {
                    self.string(start, start, false)?;
                    continue;
                }
                b'0'..=b'9' => {
                    self.number(start)?;
                    continue;
                }
                c if c == b'_' || c.is_ascii_alphabetic() => {
                    self.word(start)?;
                    continue;
                }
                _ => {
                    let ch = self.src[start..].chars().next().unwrap_or('?');
                    return Err(SourceError::new(
                        format!("unexpected character '{}'", ch.escape_debug()),
                        start,
                    ));
                }
            };
            self.push(tok, start, start + len);
        }
    }

    fn skip_space_and_comments(&mut self) {
        while let Some(c) = self.peek_at(self.pos) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.pos += 1,
                b'/' if self.peek_at(self.pos + 1) == Some(b'/') => {
                    while let Some(c) = self.peek_at(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn word(&mut self, start: usize) -> Result<(), SourceError> {
        let mut end = start;
        while self
            .peek_at(end)
            .is_some_and(|c| c == b'_' || c.is_ascii_alphanumeric())
        {
            end += 1;
        }
        let word = &self.src[start..end];
        // String prefixes: r"raw", b"bytes" (and rb / br).
        if matches!(self.peek_at(end), Some(b'"' | b'\'')) {
            let lower = word.to_ascii_lowercase();
            match lower.as_str() {
                "r" => return self.string(start, end, true),
                "b" | "rb" | "br" => {
                    return Err(SourceError::new(
                        "bytes literals are not supported; use a string",
                        start,
                    ))
                }
                _ => {}
            }
        }
        let tok = match word {
            "true" => Tok::True,
            "false" => Tok::False,
            "null" => Tok::Null,
            "in" => Tok::In,
            _ => Tok::Ident,
        };
        self.push(tok, start, end);
        Ok(())
    }

    fn number(&mut self, start: usize) -> Result<(), SourceError> {
        let b = self.bytes;
        let mut end = start;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(|c| c.is_ascii_digit()) {
                i += 1;
            }
            i
        };
        let tok;
        if b[start] == b'0' && matches!(b.get(start + 1), Some(b'x' | b'X')) {
            end = start + 2;
            while b.get(end).is_some_and(|c| c.is_ascii_hexdigit()) {
                end += 1;
            }
            if end == start + 2 {
                return Err(SourceError::new(
                    "expected hexadecimal digits after '0x'",
                    start,
                ));
            }
            let value = u64::from_str_radix(&self.src[start + 2..end], 16).map_err(|_| {
                SourceError::new("hexadecimal literal does not fit in 64 bits", start)
            })?;
            if matches!(b.get(end), Some(b'u' | b'U')) {
                end += 1;
                tok = Tok::Uint(value);
            } else {
                tok = Tok::Int(value);
            }
        } else {
            end = digits(end);
            let mut is_double = false;
            if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(|c| c.is_ascii_digit()) {
                end = digits(end + 1);
                is_double = true;
            }
            if matches!(b.get(end), Some(b'e' | b'E')) {
                let mut e = end + 1;
                if matches!(b.get(e), Some(b'+' | b'-')) {
                    e += 1;
                }
                if b.get(e).is_some_and(|c| c.is_ascii_digit()) {
                    end = digits(e);
                    is_double = true;
                } else {
                    return Err(SourceError::new(
                        "expected digits in the exponent of a number",
                        start,
                    ));
                }
            }
            let text = &self.src[start..end];
            if is_double {
                let value: f64 = text
                    .parse()
                    .map_err(|_| SourceError::new(format!("invalid number '{text}'"), start))?;
                tok = Tok::Double(value);
            } else {
                let value: u64 = text.parse().map_err(|_| {
                    SourceError::new(
                        format!("integer literal {text} does not fit in 64 bits"),
                        start,
                    )
                })?;
                if matches!(b.get(end), Some(b'u' | b'U')) {
                    end += 1;
                    tok = Tok::Uint(value);
                } else {
                    tok = Tok::Int(value);
                }
            }
        }
        if b.get(end)
            .is_some_and(|c| *c == b'_' || c.is_ascii_alphanumeric())
        {
            let mut bad_end = end;
            while b
                .get(bad_end)
                .is_some_and(|c| *c == b'_' || c.is_ascii_alphanumeric())
            {
                bad_end += 1;
            }
            return Err(SourceError::new(
                format!("invalid number '{}'", &self.src[start..bad_end]),
                start,
            ));
        }
        self.push(tok, start, end);
        Ok(())
    }

    /// A string literal whose prefix starts at `start` and opening quote is at `quote_at`.
    fn string(&mut self, start: usize, quote_at: usize, raw: bool) -> Result<(), SourceError> {
        let q = self.bytes[quote_at];
        let triple = self.peek_at(quote_at + 1) == Some(q) && self.peek_at(quote_at + 2) == Some(q);
        let body_start = quote_at + if triple { 3 } else { 1 };
        let mut out = String::new();
        let mut i = body_start;
        let unterminated = || SourceError::new("unterminated string literal", start);
        loop {
            let rest = &self.src[i..];
            let Some(ch) = rest.chars().next() else {
                return Err(unterminated());
            };
            if ch as u32 == q as u32 {
                if !triple {
                    i += 1;
                    break;
                }
                if rest.as_bytes().starts_with(&[q, q, q]) {
                    i += 3;
                    break;
                }
            }
            if !triple && (ch == '\n' || ch == '\r') {
                return Err(unterminated());
            }
            if ch == '\\' && !raw {
                let (decoded, len) = escape(&self.src[i..], i)?;
                out.push(decoded);
                i += len;
                continue;
            }
            out.push(ch);
            i += ch.len_utf8();
        }
        self.push(Tok::Str(out), start, i);
        Ok(())
    }
}

/// Decodes the escape sequence at the start of `text` (which begins with a backslash at
/// byte `offset` of the source); returns the character and the sequence's length.
fn escape(text: &str, offset: usize) -> Result<(char, usize), SourceError> {
    let bytes = text.as_bytes();
    let Some(&c) = bytes.get(1) else {
        return Err(SourceError::new("unterminated string literal", offset));
    };
    let simple = match c {
        b'a' => Some('\x07'),
        b'b' => Some('\x08'),
        b'f' => Some('\x0c'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        b'v' => Some('\x0b'),
        b'\\' => Some('\\'),
        b'\'' => Some('\''),
        b'"' => Some('"'),
        b'`' => Some('`'),
        b'?' => Some('?'),
        _ => None,
    };
    if let Some(ch) = simple {
        return Ok((ch, 2));
    }
    let (radix, digits, skip) = match c {
        b'x' | b'X' => (16, 2, 2),
        b'u' => (16, 4, 2),
        b'U' => (16, 8, 2),
        b'0'..=b'3' => (8, 3, 1),
        _ => {
            let ch = text[1..].chars().next().unwrap_or('?');
            return Err(SourceError::new(
                format!(
                    "invalid escape sequence '\\{}' (valid: \\n \\t \\r \\\\ \\' \\\" \\xHH \\uHHHH \\UHHHHHHHH)",
                    ch.escape_debug()
                ),
                offset,
            ));
        }
    };
    let end = skip + digits;
    let code = text
        .get(skip..end)
        .filter(|d| d.bytes().all(|b| (b as char).is_digit(radix)))
        .and_then(|d| u32::from_str_radix(d, radix).ok())
        .ok_or_else(|| {
            SourceError::new(
                format!(
                    "invalid escape sequence '{}': expected {digits} {} digits",
                    text.get(..end.min(text.len())).unwrap_or("\\"),
                    if radix == 16 { "hexadecimal" } else { "octal" }
                ),
                offset,
            )
        })?;
    let ch = char::from_u32(code).ok_or_else(|| {
        SourceError::new(
            format!(
                "escape sequence '{}' is not a valid code point",
                &text[..end]
            ),
            offset,
        )
    })?;
    Ok((ch, end))
}
