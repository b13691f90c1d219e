//! A parser for structured-field Lists (RFC 9651 §4.2), written from the RFC's parsing
//! algorithms to check the fields the HTTP layer emits without trusting its formatter.
//!
//! It covers what a List may hold except Dates and Display Strings: Items and Inner Lists,
//! with Integer, Decimal, String, Token, Byte Sequence and Boolean bare items and their
//! Parameters. It rejects what the RFC rejects (a trailing comma, an unescaped quote, a
//! sixteen-digit integer, uppercase keys, ...).

/// A bare item (RFC 9651 §3.3). Decimals are kept as thousandths, byte sequences as base64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Bare {
    Integer(i64),
    Decimal(i64),
    String(String),
    Token(String),
    Bytes(String),
    Boolean(bool),
}

/// A List member: an Item, or an Inner List of Items, with its Parameters in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) items: Vec<(Bare, Vec<(String, Bare)>)>,
    pub(crate) inner_list: bool,
    pub(crate) params: Vec<(String, Bare)>,
}

impl Member {
    /// The Item's bare value; `None` for an Inner List.
    pub(crate) fn item(&self) -> Option<&Bare> {
        (!self.inner_list).then(|| &self.items[0].0)
    }

    /// The value of parameter `key`.
    pub(crate) fn param(&self, key: &str) -> Option<&Bare> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Parses the field lines of one List field, combined as RFC 9651 §4.2 says (joined by
/// commas).
pub(crate) fn parse_list(lines: &[&str]) -> Result<Vec<Member>, String> {
    let joined = lines.join(",");
    if !joined.is_ascii() {
        return Err("non-ASCII field".into());
    }
    let mut input = Input {
        bytes: joined.as_bytes(),
        at: 0,
    };
    input.skip(|b| b == b' ');
    let mut members = Vec::new();
    while !input.done() {
        members.push(input.member()?);
        input.skip(|b| b == b' ' || b == b'\t');
        if input.done() {
            return Ok(members);
        }
        input.expect(b',')?;
        input.skip(|b| b == b' ' || b == b'\t');
        if input.done() {
            return Err("trailing comma".into());
        }
    }
    Ok(members)
}

struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Result<u8, String> {
        let b = self.peek().ok_or("unexpected end")?;
        self.at += 1;
        Ok(b)
    }

    fn expect(&mut self, wanted: u8) -> Result<(), String> {
        match self.next()? {
            b if b == wanted => Ok(()),
            b => Err(format!(
                "expected {:?}, found {:?}",
                wanted as char, b as char
            )),
        }
    }

    fn skip(&mut self, what: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&what) {
            self.at += 1;
        }
    }

    fn member(&mut self) -> Result<Member, String> {
        if self.peek() == Some(b'(') {
            self.at += 1;
            let mut items = Vec::new();
            loop {
                self.skip(|b| b == b' ');
                if self.peek() == Some(b')') {
                    self.at += 1;
                    break;
                }
                let bare = self.bare()?;
                items.push((bare, self.params()?));
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return Err("inner list items must be separated by spaces".into());
                }
            }
            let params = self.params()?;
            return Ok(Member {
                items,
                inner_list: true,
                params,
            });
        }
        let bare = self.bare()?;
        let params = self.params()?;
        Ok(Member {
            items: vec![(bare, Vec::new())],
            inner_list: false,
            params,
        })
    }

    fn params(&mut self) -> Result<Vec<(String, Bare)>, String> {
        let mut params: Vec<(String, Bare)> = Vec::new();
        while self.peek() == Some(b';') {
            self.at += 1;
            self.skip(|b| b == b' ');
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.at += 1;
                self.bare()?
            } else {
                Bare::Boolean(true)
            };
            // A repeated key takes the later value, in the earlier place.
            match params.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => params.push((key, value)),
            }
        }
        Ok(params)
    }

    fn key(&mut self) -> Result<String, String> {
        let first = self.next()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return Err(format!("a key cannot start with {:?}", first as char));
        }
        let mut key = String::from(first as char);
        while let Some(b) = self.peek() {
            if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)) {
                break;
            }
            key.push(b as char);
            self.at += 1;
        }
        Ok(key)
    }

    fn bare(&mut self) -> Result<Bare, String> {
        match self.peek().ok_or("missing item")? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.bytes(),
            b'?' => self.boolean(),
            b if b.is_ascii_alphabetic() || b == b'*' => Ok(self.token()),
            b => Err(format!("no item starts with {:?}", b as char)),
        }
    }

    fn number(&mut self) -> Result<Bare, String> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err("a number needs a digit".into());
        }
        let mut digits = String::new();
        let mut point = None;
        while let Some(b) = self.peek() {
            if b.is_ascii_digit() {
                digits.push(b as char);
            } else if b == b'.' && point.is_none() {
                if digits.len() > 12 {
                    return Err("too many integer digits in a decimal".into());
                }
                point = Some(digits.len());
            } else {
                break;
            }
            self.at += 1;
            if point.is_none() && digits.len() > 15 {
                return Err("an integer has at most 15 digits".into());
            }
            if point.is_some() && digits.len() > 15 {
                return Err("a decimal has at most 15 digits".into());
            }
        }
        let sign = if negative { -1 } else { 1 };
        match point {
            None => Ok(Bare::Integer(
                sign * digits.parse::<i64>().map_err(|e| e.to_string())?,
            )),
            Some(at) => {
                let fraction = digits.len() - at;
                if fraction == 0 || fraction > 3 {
                    return Err("a decimal has 1 to 3 fractional digits".into());
                }
                let value: i64 = digits
                    .parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())?;
                Ok(Bare::Decimal(
                    sign * value * 10_i64.pow(3 - fraction as u32),
                ))
            }
        }
    }

    fn string(&mut self) -> Result<Bare, String> {
        self.expect(b'"')?;
        let mut text = String::new();
        loop {
            match self.next()? {
                b'\\' => match self.next()? {
                    c @ (b'"' | b'\\') => text.push(c as char),
                    c => return Err(format!("bad escape \\{}", c as char)),
                },
                b'"' => return Ok(Bare::String(text)),
                c @ 0x20..=0x7e => text.push(c as char),
                c => return Err(format!("byte {c:#x} in a string")),
            }
        }
    }

    fn token(&mut self) -> Bare {
        let start = self.at;
        self.at += 1;
        self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
        Bare::Token(String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned())
    }

    fn bytes(&mut self) -> Result<Bare, String> {
        self.expect(b':')?;
        let start = self.at;
        self.skip(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        let text = String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned();
        self.expect(b':')?;
        Ok(Bare::Bytes(text))
    }

    fn boolean(&mut self) -> Result<Bare, String> {
        self.expect(b'?')?;
        match self.next()? {
            b'0' => Ok(Bare::Boolean(false)),
            b'1' => Ok(Bare::Boolean(true)),
            b => Err(format!("?{} is no boolean", b as char)),
        }
    }
}

#[test]
fn the_parser_follows_rfc_9651() {
    let list = parse_list(&[r#""a\"b";q=10;w=60, tok;x, (1 2);p=?0"#, "-3.5;k=:aGk=:"]).unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0].item(), Some(&Bare::String("a\"b".into())));
    assert_eq!(list[0].param("q"), Some(&Bare::Integer(10)));
    assert_eq!(list[1].item(), Some(&Bare::Token("tok".into())));
    assert_eq!(list[1].param("x"), Some(&Bare::Boolean(true)));
    assert!(list[2].inner_list && list[2].items.len() == 2);
    assert_eq!(list[2].param("p"), Some(&Bare::Boolean(false)));
    assert_eq!(list[3].item(), Some(&Bare::Decimal(-3500)));
    assert_eq!(list[3].param("k"), Some(&Bare::Bytes("aGk=".into())));
    for bad in [
        r#""a",#,
        "a,",
        r#""a\x""#,
        "1234567890123456",
        "a;Q=1",
        "1.2345",
        "\"é\"",
        "a b",
    ] {
        assert!(parse_list(&[bad]).is_err(), "{bad:?} parsed");
    }
}
