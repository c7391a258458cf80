//! JSON-RPC 1.0 framing for OVSDB: a streaming scanner that cuts complete
//! top-level JSON objects out of a growing byte buffer (several per read, or
//! one split across reads), and the message shapes on the wire. Pure: no I/O.

use serde_json::{json, Value as Json};

use super::error::{Error, Result};

/// Cuts complete JSON objects out of a byte stream.
#[derive(Debug, Default)]
pub struct FrameScanner {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for the current frame.
    pos: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl FrameScanner {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True if some bytes of an unfinished message are buffered.
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// The next complete message, if the buffer holds one.
    pub fn next_message(&mut self) -> Result<Option<Json>> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' if self.depth > 0 => self.in_string = true,
                b'{' | b'[' => {
                    if self.depth == 0 && b == b'[' {
                        return Err(self.garbage());
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err(self.garbage());
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        let frame: Vec<u8> = self.buf.drain(..self.pos).collect();
                        self.pos = 0;
                        return serde_json::from_slice(&frame).map(Some).map_err(|e| {
                            Error::Protocol(format!(
                                "malformed JSON message ({e}): {}",
                                preview(&frame)
                            ))
                        });
                    }
                }
                b if self.depth == 0 && !b.is_ascii_whitespace() => return Err(self.garbage()),
                _ => {}
            }
        }
        if self.depth == 0 {
            // Only whitespace was consumed: drop it.
            self.buf.clear();
            self.pos = 0;
        }
        Ok(None)
    }

    fn garbage(&self) -> Error {
        Error::Protocol(format!(
            "expected a JSON object, got: {}",
            preview(&self.buf[self.pos.saturating_sub(1)..])
        ))
    }
}

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    s.into_owned()
}

/// A message received from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Response {
        id: u64,
        result: Json,
        error: Json,
    },
    /// A request (with an id, e.g. `echo`) or a notification (id null).
    Request {
        id: Json,
        method: String,
        params: Json,
    },
}

impl Incoming {
    pub fn classify(msg: Json) -> Result<Incoming> {
        let Json::Object(mut obj) = msg else {
            return Err(Error::Protocol("message is not an object".into()));
        };
        let id = obj.remove("id").unwrap_or(Json::Null);
        if let Some(method) = obj.get("method").and_then(Json::as_str) {
            return Ok(Incoming::Request {
                id,
                method: method.to_string(),
                params: obj.remove("params").unwrap_or(Json::Null),
            });
        }
        if obj.contains_key("result") || obj.contains_key("error") {
            let id = id
                .as_u64()
                .ok_or_else(|| Error::Protocol(format!("response with unknown id {id}")))?;
            return Ok(Incoming::Response {
                id,
                result: obj.remove("result").unwrap_or(Json::Null),
                error: obj.remove("error").unwrap_or(Json::Null),
            });
        }
        Err(Error::Protocol(format!(
            "neither request nor response: {}",
            Json::Object(obj)
        )))
    }
}

pub fn request(id: u64, method: &str, params: Json) -> Json {
    json!({"id": id, "method": method, "params": params})
}

pub fn response(id: Json, result: Json) -> Json {
    json!({"id": id, "result": result, "error": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &mut FrameScanner) -> Vec<Json> {
        let mut out = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut s = FrameScanner::new();
        s.extend(br#"{"id":1,"result":{}} {"id":null,"method":"update2","params":["x","}{"]}"#);
        let msgs = all(&mut s);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1]["params"][1], json!("}{"));
        assert!(!s.has_partial());
    }

    #[test]
    fn one_message_split_at_every_byte() {
        let text = br#"{"a":"q\"uo}te\\","b":[1,{"c":2}]}"#;
        for cut in 0..text.len() {
            let mut s = FrameScanner::new();
            s.extend(&text[..cut]);
            assert_eq!(s.next_message().unwrap(), None, "cut at {cut}");
            s.extend(&text[cut..]);
            let m = s.next_message().unwrap().expect("complete");
            assert_eq!(m["a"], json!("q\"uo}te\\"));
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut s = FrameScanner::new();
        s.extend(b"hello");
        assert!(s.next_message().is_err());
        let mut s = FrameScanner::new();
        s.extend(br#"{"a":tru}"#);
        assert!(s.next_message().is_err());
        let mut s = FrameScanner::new();
        s.extend(b"}");
        assert!(s.next_message().is_err());
    }

    #[test]
    fn classifies_responses_requests_and_notifications() {
        let r = Incoming::classify(json!({"id":4,"result":[1],"error":null})).unwrap();
        assert!(matches!(r, Incoming::Response { id: 4, .. }));
        let e = Incoming::classify(json!({"id":"echo","method":"echo","params":[]})).unwrap();
        assert!(matches!(e, Incoming::Request { ref method, .. } if method == "echo"));
        assert!(Incoming::classify(json!({"id":"x","result":1})).is_err());
        assert!(Incoming::classify(json!({"foo":1})).is_err());
    }
}
