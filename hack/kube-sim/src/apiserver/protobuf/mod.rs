//! Kubernetes protobuf request bodies (`Content-Type: application/vnd.kubernetes.protobuf`):
//! the `k8s\0` magic, the `runtime.Unknown` envelope (apiVersion, kind, the encoded object)
//! and the object itself, turned into the JSON the rest of the server works on. client-go
//! writes this way (kubectl's generator commands, Multus's pod status and Events) and does
//! not fall back to JSON on a 415. Answers stay JSON: clients accept it.
//!
//! The wire schema (field numbers, JSON names, types) of core/v1, apps/v1, events.k8s.io/v1,
//! authentication.k8s.io/v1, authorization.k8s.io/v1 and meta/v1 is generated into `schema.rs`; other groups are refused by name. Decoding
//! follows Go's JSON form of the result: the wrapper messages (Time, MicroTime, Duration,
//! Quantity, IntOrString, RawExtension, FieldsV1) become their JSON scalars, embedded Go
//! structs are inlined, and the empty strings and zero times that gogo-protobuf writes for
//! every non-pointer field are left out as `omitempty` would. Encoding protobuf is not here:
//! nothing answers in it.

mod schema;

use base64::Engine;
use serde_json::{json, Map, Value};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";
const UNKNOWN: &str = "apimachinery.pkg.runtime.Unknown";

/// One message of the schema.
pub(crate) struct Message {
    name: &'static str,
    fields: &'static [Field],
}

/// One field: its number on the wire, its JSON name (empty for an embedded struct), its type.
pub(crate) struct Field {
    number: u64,
    json: &'static str,
    kind: Kind,
    repeated: bool,
}

pub(crate) enum Kind {
    String,
    Bool,
    Int,
    Bytes,
    Message(&'static str),
    /// A Go struct embedded with `json:",inline"`: its fields belong to the parent.
    Inline(&'static str),
    MapOfString,
    MapOfBytes,
    MapOfMessage(&'static str),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("the body does not start with the Kubernetes protobuf magic \"k8s\\0\"")]
    NotFramed,
    #[error("{message}: the body ends in the middle of a field")]
    Truncated { message: String },
    #[error("{message}: field {number} has wire type {wire_type}, which Kubernetes does not use")]
    WireType {
        message: String,
        number: u64,
        wire_type: u64,
    },
    #[error("{message}: {reason}")]
    Malformed { message: String, reason: String },
    #[error("kube-sim does not decode protobuf bodies of {api_version} {kind} yet; send JSON")]
    UnsupportedKind { api_version: String, kind: String },
}

/// Whether a request body is protobuf, by its magic (the content type may be missing).
pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// The JSON object carried by a `k8s\0`-framed `runtime.Unknown`, with its apiVersion and kind.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let framed = body.strip_prefix(MAGIC).ok_or(DecodeError::NotFramed)?;
    let envelope = decode_message(message(UNKNOWN)?, framed)?;
    let type_meta = envelope.get("typeMeta").cloned().unwrap_or_default();
    let api_version = type_meta
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = type_meta
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let unsupported = || DecodeError::UnsupportedKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    };
    let name = message_name(&api_version, &kind).ok_or_else(unsupported)?;
    let schema = message(&name).map_err(|_| unsupported())?;
    let raw = envelope
        .get("raw")
        .and_then(Value::as_str)
        .map(|b64| base64::engine::general_purpose::STANDARD.decode(b64))
        .transpose()
        .map_err(|e| malformed(UNKNOWN, format!("raw: {e}")))?
        .unwrap_or_default();
    let mut object = decode_message(schema, &raw)?;
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    Ok(Value::Object(object))
}

/// The schema message of `apiVersion`/`kind`: API groups map to their k8s.io/api package
/// (`apps/v1` → `api.apps.v1`), options kinds to meta/v1.
fn message_name(api_version: &str, kind: &str) -> Option<String> {
    if kind.is_empty() {
        return None;
    }
    if kind.ends_with("Options") {
        return Some(format!("apimachinery.pkg.apis.meta.v1.{kind}"));
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "core",
        other => other.strip_suffix(".k8s.io").unwrap_or(other),
    };
    (!package.contains('.')).then(|| format!("api.{package}.{version}.{kind}"))
}

fn message(name: &str) -> Result<&'static Message, DecodeError> {
    schema::MESSAGES
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| malformed(name, "not in kube-sim's protobuf schema".into()))
}

fn malformed(message: &str, reason: String) -> DecodeError {
    DecodeError::Malformed {
        message: message.to_string(),
        reason,
    }
}

/// The protobuf wire format, read field by field.
struct Reader<'a> {
    bytes: &'a [u8],
    message: &'static str,
}

enum WireValue<'a> {
    Varint(u64),
    /// fixed32/fixed64: no Kubernetes field uses them; read past, never decoded.
    Fixed,
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            message: self.message.to_string(),
        }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, byte) in self.bytes.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(value);
            }
        }
        Err(self.truncated())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(self.truncated());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next field: its number and value, or None at the end.
    fn field(&mut self) -> Result<Option<(u64, WireValue<'a>)>, DecodeError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire_type) = (key >> 3, key & 7);
        let value = match wire_type {
            0 => WireValue::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                WireValue::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.truncated())?;
                WireValue::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                WireValue::Fixed
            }
            _ => {
                return Err(DecodeError::WireType {
                    message: self.message.to_string(),
                    number,
                    wire_type,
                })
            }
        };
        Ok(Some((number, value)))
    }
}

fn decode_message(
    schema: &'static Message,
    bytes: &[u8],
) -> Result<Map<String, Value>, DecodeError> {
    let mut object = Map::new();
    let mut reader = Reader {
        bytes,
        message: schema.name,
    };
    while let Some((number, value)) = reader.field()? {
        let Some(field) = schema.fields.iter().find(|f| f.number == number) else {
            // A newer client's field: protobuf readers skip what they do not know.
            tracing::debug!(
                message = schema.name,
                number,
                "skipping unknown protobuf field"
            );
            continue;
        };
        decode_field(schema, field, value, &mut object)?;
    }
    Ok(object)
}

fn decode_field(
    schema: &'static Message,
    field: &Field,
    value: WireValue<'_>,
    object: &mut Map<String, Value>,
) -> Result<(), DecodeError> {
    let wrong = || DecodeError::WireType {
        message: schema.name.to_string(),
        number: field.number,
        wire_type: match value {
            WireValue::Varint(_) => 0,
            WireValue::Fixed => 1,
            WireValue::Bytes(_) => 2,
        },
    };
    let decoded = match (&field.kind, &value) {
        (Kind::Int, WireValue::Bytes(packed)) if field.repeated => {
            let mut reader = Reader {
                bytes: packed,
                message: schema.name,
            };
            let items = object
                .entry(field.json)
                .or_insert_with(|| Value::Array(Vec::new()));
            while !reader.bytes.is_empty() {
                let n = reader.varint()?;
                if let Value::Array(items) = items {
                    items.push(json!(n as i64));
                }
            }
            return Ok(());
        }
        // int32 and int64 alike: a negative int32 is sign-extended to ten bytes on the wire.
        (Kind::Int, WireValue::Varint(n)) => json!(*n as i64),
        (Kind::Bool, WireValue::Varint(n)) => json!(*n != 0),
        (Kind::String, WireValue::Bytes(b)) => {
            let text = std::str::from_utf8(b)
                .map_err(|e| malformed(schema.name, format!("{}: {e}", field.json)))?;
            if text.is_empty() && !field.repeated {
                return Ok(());
            }
            json!(text)
        }
        (Kind::Bytes, WireValue::Bytes(b)) => json!(base64_of(b)),
        (Kind::Message(name), WireValue::Bytes(b)) => match wrapped(name, b)? {
            Some(v) => v,
            None => return Ok(()),
        },
        (Kind::Inline(name), WireValue::Bytes(b)) => {
            object.extend(decode_message(message(name)?, b)?);
            return Ok(());
        }
        (Kind::MapOfString | Kind::MapOfBytes | Kind::MapOfMessage(_), WireValue::Bytes(b)) => {
            let (key, entry) = map_entry(schema, &field.kind, b)?;
            let map = object
                .entry(field.json)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = map {
                map.insert(key, entry);
            }
            return Ok(());
        }
        _ => return Err(wrong()),
    };
    if field.repeated {
        let items = object
            .entry(field.json)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = items {
            items.push(decoded);
        }
    } else {
        object.insert(field.json.to_string(), decoded);
    }
    Ok(())
}

/// One entry of a `map<string, …>`: a message with the key as field 1 and the value as 2.
fn map_entry(
    schema: &'static Message,
    kind: &Kind,
    bytes: &[u8],
) -> Result<(String, Value), DecodeError> {
    let mut reader = Reader {
        bytes,
        message: schema.name,
    };
    let (mut key, mut value) = (String::new(), None);
    while let Some((number, wire)) = reader.field()? {
        let WireValue::Bytes(b) = wire else {
            return Err(malformed(schema.name, "a map entry holds a number".into()));
        };
        match number {
            1 => {
                key = String::from_utf8(b.to_vec())
                    .map_err(|e| malformed(schema.name, format!("map key: {e}")))?;
            }
            2 => {
                value = Some(match kind {
                    Kind::MapOfBytes => json!(base64_of(b)),
                    Kind::MapOfMessage(name) => wrapped(name, b)?.unwrap_or(Value::Null),
                    _ => json!(String::from_utf8_lossy(b)),
                });
            }
            _ => {}
        }
    }
    let empty = match kind {
        Kind::MapOfMessage(_) => json!({}),
        _ => json!(""),
    };
    Ok((key, value.unwrap_or(empty)))
}

/// A nested message as Go's JSON writes it: the wrapper types as scalars (None for a zero
/// time, which Go writes as null), everything else as an object.
fn wrapped(name: &str, bytes: &[u8]) -> Result<Option<Value>, DecodeError> {
    let fields = decode_message(message(name)?, bytes)?;
    let int = |key: &str| fields.get(key).and_then(Value::as_i64).unwrap_or(0);
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let raw = |key: &str| -> Result<Value, DecodeError> {
        let b64 = text(key);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| malformed(name, e.to_string()))?;
        if raw.is_empty() {
            return Ok(json!({}));
        }
        if is_protobuf(&raw) {
            return decode(&raw);
        }
        serde_json::from_slice(&raw).map_err(|e| malformed(name, format!("raw JSON: {e}")))
    };
    Ok(Some(match name {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let (seconds, nanos) = (int("seconds"), int("nanos"));
            if seconds == 0 && nanos == 0 {
                return Ok(None);
            }
            json!(timestamp(
                seconds,
                nanos,
                name.ends_with("MicroTime"),
                name
            )?)
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => json!(go_duration(int("duration"))),
        "apimachinery.pkg.api.resource.Quantity" => json!(text("string")),
        "apimachinery.pkg.util.intstr.IntOrString" => match int("type") {
            0 => json!(int("intVal")),
            _ => json!(text("strVal")),
        },
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            raw("raw")?
        }
        _ => Value::Object(fields),
    }))
}

/// RFC 3339 in UTC, to the second (metav1.Time) or the microsecond (metav1.MicroTime).
fn timestamp(seconds: i64, nanos: i64, micro: bool, name: &str) -> Result<String, DecodeError> {
    let nanos = i32::try_from(nanos).map_err(|e| malformed(name, e.to_string()))?;
    let at = jiff::Timestamp::new(seconds, if micro { nanos } else { 0 })
        .map_err(|e| malformed(name, e.to_string()))?;
    Ok(if micro {
        format!("{}Z", at.strftime("%Y-%m-%dT%H:%M:%S%.6f"))
    } else {
        format!("{}Z", at.strftime("%Y-%m-%dT%H:%M:%S"))
    })
}

/// A Go `time.Duration` (nanoseconds) as Go prints it: `1h2m3s`, `1.5s`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let nanos = nanos.unsigned_abs();
    let (hours, rest) = (nanos / 3_600_000_000_000, nanos % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = rest as f64 / 1e9;
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited field.
    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = varint(number << 3 | 2);
        out.extend(varint(bytes.len() as u64));
        out.extend(bytes);
        out
    }

    fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &type_meta));
        body.extend(field(2, raw));
        body
    }

    #[test]
    fn a_namespace_decodes_to_its_json_form() {
        let meta = [field(1, b"x"), field(3, b"")].concat();
        let body = envelope("v1", "Namespace", &field(1, &meta));
        assert_eq!(
            decode(&body).expect("decodes"),
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "x" } })
        );
    }

    #[test]
    fn maps_times_and_embedded_structs_take_their_json_shapes() {
        let entry = [field(1, b"a"), field(2, b"b")].concat();
        let time = [vec![8], varint(1_700_000_000)].concat();
        let meta = [field(1, b"c"), field(8, &time), field(11, &entry)].concat();
        let configmap = [field(1, &meta), field(2, &entry)].concat();
        let decoded = decode(&envelope("v1", "ConfigMap", &configmap)).expect("decodes");
        assert_eq!(decoded["data"], json!({ "a": "b" }));
        assert_eq!(decoded["metadata"]["labels"], json!({ "a": "b" }));
        assert_eq!(
            decoded["metadata"]["creationTimestamp"],
            json!("2023-11-14T22:13:20Z")
        );

        // Volume embeds VolumeSource; ConfigMapVolumeSource embeds LocalObjectReference.
        let source = field(19, &field(1, &field(1, b"settings")));
        let volume = [field(1, b"config"), field(2, &source)].concat();
        let spec = field(1, &volume);
        let decoded = decode(&envelope("v1", "Pod", &field(2, &spec))).expect("decodes");
        assert_eq!(
            decoded["spec"]["volumes"],
            json!([{ "name": "config", "configMap": { "name": "settings" } }])
        );
    }

    #[test]
    fn kinds_outside_the_schema_are_refused_by_name() {
        let body = envelope("rbac.authorization.k8s.io/v1", "Role", &[]);
        assert_eq!(
            decode(&body),
            Err(DecodeError::UnsupportedKind {
                api_version: "rbac.authorization.k8s.io/v1".into(),
                kind: "Role".into()
            })
        );
        assert_eq!(decode(b"{}"), Err(DecodeError::NotFramed));
        let cut = envelope("v1", "Namespace", &field(1, &field(1, b"x")));
        assert!(matches!(
            decode(&cut[..cut.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn every_message_the_schema_refers_to_is_in_it() {
        for m in schema::MESSAGES {
            for f in m.fields {
                if let Kind::Message(name) | Kind::Inline(name) | Kind::MapOfMessage(name) = f.kind
                {
                    assert!(
                        message(name).is_ok(),
                        "{}.{} refers to {name}",
                        m.name,
                        f.json
                    );
                }
            }
        }
    }

    #[test]
    fn go_durations_print_as_go_does() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    }
}
