//! Lenient typed views of the protocol events capture reads.
//!
//! Chromium renames and adds fields between releases; these structs name only what we read,
//! default everything that may be missing and ignore the rest. An event whose required fields
//! are absent or of the wrong type is a decode failure: [`parse`] returns `Err` and the caller
//! counts it (every browser test asserts the count is 0).

use serde::Deserialize;
use serde_json::Value;

/// `Network.Request`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestData {
    pub url: String,
    pub method: String,
    pub headers: Value,
    pub post_data: Option<String>,
    pub post_data_entries: Vec<PostDataEntry>,
    pub has_post_data: bool,
}

/// One chunk of a request body (base64).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PostDataEntry {
    pub bytes: Option<String>,
}

/// `Network.Response` (the fields we read).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResponseData {
    pub status: Option<f64>,
    pub mime_type: Option<String>,
}

impl ResponseData {
    pub fn status(&self) -> Option<u16> {
        self.status.map(|s| s as u16)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestWillBeSent {
    pub request_id: String,
    pub request: RequestData,
    #[serde(rename = "type")]
    pub resource_type: Option<String>,
    pub initiator: Value,
    #[serde(rename = "documentURL")]
    pub document_url: Option<String>,
    pub frame_id: Option<String>,
    pub redirect_response: Option<ResponseData>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResponseReceived {
    pub request_id: String,
    #[serde(rename = "type")]
    pub resource_type: Option<String>,
    pub frame_id: Option<String>,
    pub response: ResponseData,
}

/// `Network.loadingFinished` and `Network.loadingFailed`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadingEnded {
    pub request_id: String,
    pub error_text: Option<String>,
    pub blocked_reason: Option<String>,
}

/// `Network.requestWillBeSentExtraInfo` and `Network.responseReceivedExtraInfo`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtraInfo {
    pub request_id: String,
    pub headers: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebSocketCreated {
    pub request_id: String,
    pub url: String,
    pub initiator: Value,
}

/// `Network.webSocketFrameSent`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebSocketFrame {
    pub request_id: String,
    pub response: WebSocketFrameData,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebSocketFrameData {
    pub opcode: f64,
    pub payload_data: String,
}

/// `Network.webSocketClosed`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestIdOnly {
    pub request_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FrameInfo {
    pub id: String,
    pub parent_id: Option<String>,
    pub url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FrameNavigated {
    pub frame: FrameInfo,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NavigatedWithinDocument {
    pub frame_id: String,
    pub url: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TargetInfo {
    pub target_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub opener_id: Option<String>,
    pub browser_context_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AttachedToTarget {
    pub session_id: String,
    pub target_info: TargetInfo,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DetachedFromTarget {
    pub session_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestPaused {
    pub request_id: String,
    pub request: RequestData,
    pub resource_type: String,
    pub frame_id: Option<String>,
    /// Why the tab's responder failed it, added by the responder before the event reaches
    /// the capture (the one judgement, recorded as made).
    pub pixelwatch_blocked: Option<String>,
}

/// The events capture and the responders read, typed.
#[derive(Debug)]
pub enum Event {
    RequestWillBeSent(RequestWillBeSent),
    RequestExtraInfo(ExtraInfo),
    ResponseReceived(ResponseReceived),
    ResponseExtraInfo(ExtraInfo),
    LoadingFinished(LoadingEnded),
    LoadingFailed(LoadingEnded),
    WebSocketCreated(WebSocketCreated),
    WebSocketFrameSent(WebSocketFrame),
    WebSocketClosed(RequestIdOnly),
    FrameNavigated(FrameNavigated),
    NavigatedWithinDocument(NavigatedWithinDocument),
    LoadEventFired,
    DialogOpening,
    TargetCrashed,
    InspectorDetached,
    AttachedToTarget(AttachedToTarget),
    DetachedFromTarget(DetachedFromTarget),
    TargetCreated(TargetInfo),
    RequestPaused(RequestPaused),
}

/// Why an event could not be used.
#[derive(Debug)]
pub struct DecodeError;

/// Reads one event. `Ok(None)` for events capture does not use; `Err` when a used event lacks
/// what it must carry (protocol drift).
pub fn parse(method: &str, params: &Value) -> Result<Option<Event>, DecodeError> {
    fn de<T: for<'de> Deserialize<'de>>(params: &Value) -> Result<T, DecodeError> {
        T::deserialize(params).map_err(|_| DecodeError)
    }
    fn need(id: &str) -> Result<(), DecodeError> {
        if id.is_empty() {
            Err(DecodeError)
        } else {
            Ok(())
        }
    }
    let ev = match method {
        "Network.requestWillBeSent" => {
            let e: RequestWillBeSent = de(params)?;
            need(&e.request_id)?;
            need(&e.request.url)?;
            Event::RequestWillBeSent(e)
        }
        "Network.requestWillBeSentExtraInfo" | "Network.responseReceivedExtraInfo" => {
            let e: ExtraInfo = de(params)?;
            need(&e.request_id)?;
            if method == "Network.requestWillBeSentExtraInfo" {
                Event::RequestExtraInfo(e)
            } else {
                Event::ResponseExtraInfo(e)
            }
        }
        "Network.responseReceived" => {
            let e: ResponseReceived = de(params)?;
            need(&e.request_id)?;
            Event::ResponseReceived(e)
        }
        "Network.loadingFinished" | "Network.loadingFailed" => {
            let e: LoadingEnded = de(params)?;
            need(&e.request_id)?;
            if method == "Network.loadingFinished" {
                Event::LoadingFinished(e)
            } else {
                Event::LoadingFailed(e)
            }
        }
        "Network.webSocketCreated" => {
            let e: WebSocketCreated = de(params)?;
            need(&e.request_id)?;
            Event::WebSocketCreated(e)
        }
        "Network.webSocketFrameSent" => {
            let e: WebSocketFrame = de(params)?;
            need(&e.request_id)?;
            Event::WebSocketFrameSent(e)
        }
        "Network.webSocketClosed" => {
            let e: RequestIdOnly = de(params)?;
            need(&e.request_id)?;
            Event::WebSocketClosed(e)
        }
        "Page.frameNavigated" => Event::FrameNavigated(de(params)?),
        "Page.navigatedWithinDocument" => {
            let e: NavigatedWithinDocument = de(params)?;
            need(&e.url)?;
            Event::NavigatedWithinDocument(e)
        }
        "Page.loadEventFired" => Event::LoadEventFired,
        "Page.javascriptDialogOpening" => Event::DialogOpening,
        "Inspector.targetCrashed" => Event::TargetCrashed,
        "Inspector.detached" => Event::InspectorDetached,
        "Target.attachedToTarget" => {
            let e: AttachedToTarget = de(params)?;
            need(&e.session_id)?;
            Event::AttachedToTarget(e)
        }
        "Target.detachedFromTarget" => Event::DetachedFromTarget(de(params)?),
        "Target.targetCreated" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Created {
                target_info: TargetInfo,
            }
            Event::TargetCreated(de::<Created>(params)?.target_info)
        }
        "Fetch.requestPaused" => {
            let e: RequestPaused = de(params)?;
            need(&e.request_id)?;
            Event::RequestPaused(e)
        }
        _ => return Ok(None),
    };
    Ok(Some(ev))
}

/// Case-insensitive header lookup in a protocol headers object.
pub fn header(headers: &Value, name: &str) -> Option<String> {
    headers.as_object().and_then(|h| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_it_needs_and_ignores_the_rest() {
        let p = json!({"requestId": "1.2", "request": {"url": "https://a.test/", "method": "POST",
            "headers": {"Referer": "https://b.test/"}, "somethingNew": [1, 2]},
            "type": "Ping", "initiator": {"type": "script"}, "renamedField": true});
        let Some(Event::RequestWillBeSent(e)) = parse("Network.requestWillBeSent", &p).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!(e.request.method, "POST");
        assert_eq!(e.resource_type.as_deref(), Some("Ping"));
        assert_eq!(
            header(&e.request.headers, "referer").as_deref(),
            Some("https://b.test/")
        );
    }

    #[test]
    fn a_used_event_without_its_id_is_a_decode_failure() {
        assert!(parse("Network.loadingFinished", &json!({"timestamp": 1.0})).is_err());
        assert!(parse("Network.requestWillBeSent", &json!({"requestId": 5})).is_err());
        assert!(parse("Network.dataReceived", &json!({})).unwrap().is_none());
    }
}
