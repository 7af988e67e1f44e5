//! The fast path of [`super::parse_body`]: a well-formed single event or bare array of events,
//! read straight into [`IncomingEvent`]s without building a `serde_json::Value` tree (no map
//! of owned keys, no values to remove from it).
//!
//! It only ever answers "these events" or "not sure": any wrong type, missing name, rule
//! broken, a batch object (`{"events": [...]}`) or too many events gives `None`, and the
//! caller reads the body again through the `Value` path, which names the first problem. The
//! rules are the same functions as that path's ([`super::event_time_of`] and its siblings);
//! duplicate keys resolve the same way (the last one wins, as in a `Value` map), and unknown
//! field names come out sorted and deduplicated, as a `Value` map's keys do.

use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::{IncomingEvent, check_name, event_time_of, ip_of, precheck, value_of};

/// Events of a single-event or bare-array body, or `None` when the `Value` path must decide.
pub(super) fn parse(body: &[u8], max_events: usize) -> Option<Vec<IncomingEvent>> {
    precheck(body).ok()?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let events = (&mut de).deserialize_any(Top { max_events }).ok()?;
    de.end().ok()?;
    // Errors are the `Value` path's to name, so the JSON path of an event does not matter here.
    events.into_iter().map(Raw::finish).collect()
}

/// The fields as read, before the rules.
#[derive(Default)]
struct Raw {
    event: Option<String>,
    event_id: Option<String>,
    event_time: Option<Number>,
    ttclid: Option<String>,
    ttp: Option<String>,
    fbclid: Option<String>,
    fbc: Option<String>,
    fbp: Option<String>,
    client_ip_address: Option<String>,
    client_user_agent: Option<String>,
    url: Option<String>,
    value: Option<Number>,
    currency: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    consent_token: Option<String>,
    subject: Option<String>,
    test_event_code: Option<String>,
    other_fields: Vec<String>,
}

impl Raw {
    /// Apply the `Value` path's rules; `None` when one fails (that path then names it).
    fn finish(mut self) -> Option<IncomingEvent> {
        let event = self.event?;
        check_name(&event, "").ok()?;
        let event_time = match self.event_time {
            Some(n) => Some(event_time_of(&n, "").ok()?),
            None => None,
        };
        let value = match self.value {
            Some(n) => Some(value_of(&n, "").ok()?),
            None => None,
        };
        let client_ip = match self.client_ip_address {
            Some(s) => Some(ip_of(&s, "").ok()?),
            None => None,
        };
        self.other_fields.sort_unstable();
        self.other_fields.dedup();
        Some(IncomingEvent {
            event,
            event_id: self.event_id,
            event_time,
            ttclid: self.ttclid,
            ttp: self.ttp,
            fbclid: self.fbclid,
            fbc: self.fbc,
            fbp: self.fbp,
            client_ip,
            client_user_agent: self.client_user_agent,
            url: self.url,
            value,
            currency: self.currency,
            email: self.email,
            phone: self.phone,
            consent_token: self.consent_token,
            subject: self.subject,
            test_event_code: self.test_event_code,
            other_fields: self.other_fields,
        })
    }
}

/// The body: one event object or an array of them.
struct Top {
    max_events: usize,
}

impl<'de> Visitor<'de> for Top {
    type Value = Vec<Raw>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Raw>, A::Error> {
        Ok(vec![EventVisitor.visit_map(map)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Raw>, A::Error> {
        let mut out = Vec::new();
        while let Some(raw) = seq.next_element_seed(EventSeed)? {
            if out.len() == self.max_events {
                return Err(de::Error::custom("too many events"));
            }
            out.push(raw);
        }
        if out.is_empty() {
            return Err(de::Error::custom("empty batch"));
        }
        Ok(out)
    }
}

struct EventSeed;

impl<'de> DeserializeSeed<'de> for EventSeed {
    type Value = Raw;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Raw, A::Error> {
        let mut r = Raw::default();
        while let Some(key) = m.next_key::<Key>()? {
            match key {
                Key::Event => r.event = m.next_value()?,
                Key::EventId => r.event_id = m.next_value()?,
                Key::EventTime => r.event_time = m.next_value()?,
                Key::Ttclid => r.ttclid = m.next_value()?,
                Key::Ttp => r.ttp = m.next_value()?,
                Key::Fbclid => r.fbclid = m.next_value()?,
                Key::Fbc => r.fbc = m.next_value()?,
                Key::Fbp => r.fbp = m.next_value()?,
                Key::ClientIp => r.client_ip_address = m.next_value()?,
                Key::ClientUserAgent => r.client_user_agent = m.next_value()?,
                Key::Url => r.url = m.next_value()?,
                Key::Value => r.value = m.next_value()?,
                Key::Currency => r.currency = m.next_value()?,
                Key::Email => r.email = m.next_value()?,
                Key::Phone => r.phone = m.next_value()?,
                Key::ConsentToken => r.consent_token = m.next_value()?,
                Key::Subject => r.subject = m.next_value()?,
                Key::TestEventCode => r.test_event_code = m.next_value()?,
                // A batch object is the `Value` path's to judge.
                Key::Events => return Err(de::Error::custom("batch object")),
                Key::Other(name) => {
                    // Read as a `Value`, not skipped: skipping would not check that its numbers
                    // are in range, and the `Value` path refuses a body where one is not.
                    m.next_value::<serde_json::Value>()?;
                    r.other_fields.push(name);
                }
            }
        }
        Ok(r)
    }
}

/// A field name: the known ones without allocating, any other kept for its keyed hash.
enum Key {
    Event,
    EventId,
    EventTime,
    Ttclid,
    Ttp,
    Fbclid,
    Fbc,
    Fbp,
    ClientIp,
    ClientUserAgent,
    Url,
    Value,
    Currency,
    Email,
    Phone,
    ConsentToken,
    Subject,
    TestEventCode,
    Events,
    Other(String),
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
        Ok(match k {
            "event" => Key::Event,
            "event_id" => Key::EventId,
            "event_time" => Key::EventTime,
            "ttclid" => Key::Ttclid,
            "ttp" => Key::Ttp,
            "fbclid" => Key::Fbclid,
            "fbc" => Key::Fbc,
            "fbp" => Key::Fbp,
            "client_ip_address" => Key::ClientIp,
            "client_user_agent" => Key::ClientUserAgent,
            "url" => Key::Url,
            "value" => Key::Value,
            "currency" => Key::Currency,
            "email" => Key::Email,
            "phone" => Key::Phone,
            "consent_token" => Key::ConsentToken,
            "subject" => Key::Subject,
            "test_event_code" => Key::TestEventCode,
            "events" => Key::Events,
            other => Key::Other(other.to_string()),
        })
    }
}
