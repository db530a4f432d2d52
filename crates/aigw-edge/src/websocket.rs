//! The WebSocket API: `GET /v1/{account}/{gateway}` upgraded, carrying any number of
//! concurrent Universal Endpoint requests.
//!
//! Each `universal.create` message becomes a Universal Endpoint request — the session's
//! connect-time headers, the message's `cf-aig-*` headers over them, its request as the steps —
//! run by the very [`universal`](crate::universal) code the HTTP endpoint runs. Answers go back
//! tagged with the client's `eventId`: `universal.created` (with the response, or only the
//! metadata for a stream, followed by a `universal.stream` per chunk and `universal.done`),
//! or `universal.error`; a bad message gets an error and the connection stays open. At most
//! [`MAX_IN_FLIGHT`] requests run at once per connection: past that the next message is not
//! read until one finishes, so a fast client meets back-pressure instead of unbounded memory.
//! When the edge shuts down, a session stops reading, answers what is in flight, and closes
//! with 1001 (going away); the edge waits for it before draining its logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::EdgeState;
use crate::cache::CACHE_STATUS_HEADER;
use crate::error::EdgeError;
use crate::proxy::{AUTHORIZATION_HEADER, EVENT_ID_HEADER, LOG_ID_HEADER, authorize};
use crate::universal::{STEP_HEADER, coordinates, universal};

/// Requests one connection runs at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// The largest message a client may send; larger ones are refused with an error message.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Frames past which the connection itself is closed (a client ignoring the limit above).
const MAX_FRAME_BYTES: usize = 8 * MAX_MESSAGE_BYTES;
/// How often the server pings an idle client.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long a connection with nothing in flight may stay silent.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a closing session waits for its requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The subprotocol prefix browsers use to send the gateway token.
const AUTH_PROTOCOL: &str = "cf-aig-authorization.";

/// Upgrades `GET /v1/{account}/{gateway}`; the gateway's checks come first.
pub(crate) async fn upgrade(edge: Arc<EdgeState>, req: Request) -> Result<Response, EdgeError> {
    let (mut parts, _) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let (account, gateway) = coordinates(&path)
        .ok_or_else(|| EdgeError::MalformedPath("expected /v1/{account_id}/{gateway_id}".into()))?;
    let (account, gateway) = (account.to_owned(), gateway.to_owned());
    let settings =
        edge.gateways
            .resolve(&account, &gateway)
            .ok_or_else(|| EdgeError::GatewayNotFound {
                account: account.clone(),
                gateway: gateway.clone(),
            })?;
    // A browser cannot set headers on an upgrade: it may send the token as a subprotocol.
    let offered = protocol_token(&parts.headers);
    let mut session = parts.headers.clone();
    if let Some((_, token)) = &offered
        && !session.contains_key(AUTHORIZATION_HEADER)
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        session.insert(AUTHORIZATION_HEADER, value);
    }
    authorize(&edge, &settings, &account, &gateway, &session)?;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| EdgeError::MalformedPath(format!("not a WebSocket upgrade: {e}")))?;
    let ws = match offered {
        Some((protocol, _)) => ws.protocols([protocol]),
        None => ws,
    };
    let session = session_headers(&session);
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| run(edge, socket, path, session))
        .into_response())
}

/// The `cf-aig-authorization.<token>` subprotocol offered, and its token.
fn protocol_token(headers: &HeaderMap) -> Option<(String, String)> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| {
            p.strip_prefix(AUTH_PROTOCOL)
                .map(|token| (p.to_owned(), token.to_owned()))
        })
}

/// The connect request's headers that apply to every request of the session: all but those
/// of the upgrade itself.
fn session_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
        header::CONTENT_LENGTH,
        header::HOST,
    ] {
        out.remove(name);
    }
    out
}

/// Serves one connection until the client closes it, goes silent, or breaks the protocol.
async fn run(edge: Arc<EdgeState>, socket: WebSocket, path: String, session: HeaderMap) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outgoing) = mpsc::channel::<Message>(256);
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut closing = edge.closing.clone();
    let mut last_seen = Instant::now();
    loop {
        if *closing.borrow_and_update() {
            break;
        }
        // Back-pressure: the next message is read only once a slot is free.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let message = tokio::select! {
            message = stream.next() => message,
            _ = closing.changed() => break,
            _ = ping.tick() => {
                let idle = slots.available_permits() == MAX_IN_FLIGHT - 1
                    && last_seen.elapsed() > IDLE_TIMEOUT;
                if idle || out.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                let _ = out
                    .send(error(
                        None,
                        400,
                        "binary messages are not supported; send JSON text",
                    ))
                    .await;
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            // Pings are answered by the socket itself; pongs only show the client is there.
            Some(Ok(_)) => {
                last_seen = Instant::now();
                continue;
            }
        };
        last_seen = Instant::now();
        if text.len() > MAX_MESSAGE_BYTES {
            let _ = out
                .send(error(
                    None,
                    413,
                    &format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
                ))
                .await;
            continue;
        }
        let (edge, out, path, session) = (edge.clone(), out.clone(), path.clone(), session.clone());
        tokio::spawn(async move {
            let _slot = slot;
            answer(&edge, &out, &path, &session, text.as_str()).await;
        });
    }
    // Answer what is in flight (bounded), then say goodbye.
    let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await;
    if *closing.borrow() {
        let _ = out
            .send(Message::Close(Some(CloseFrame {
                code: close_code::AWAY,
                reason: "the gateway is shutting down".into(),
            })))
            .await;
    }
    drop(out);
    let _ = writer.await;
}

/// A `universal.error` message.
fn error(event_id: Option<&str>, code: u16, message: &str) -> Message {
    text(json!({
        "type": "universal.error",
        "metadata": {"eventId": event_id},
        "error": {"code": code, "message": message},
    }))
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

/// Runs one client message and sends its answer.
async fn answer(
    edge: &EdgeState,
    out: &mpsc::Sender<Message>,
    path: &str,
    session: &HeaderMap,
    message: &str,
) {
    let parsed: Value = match serde_json::from_str(message) {
        Ok(v) => v,
        Err(e) => {
            let _ = out
                .send(error(None, 400, &format!("message is not JSON: {e}")))
                .await;
            return;
        }
    };
    let request = &parsed["request"];
    let event_id = request
        .get("eventId")
        .or_else(|| request.get(0).and_then(|s| s.get("eventId")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let event = event_id.as_deref();
    if parsed["type"] != "universal.create" {
        let _ = out
            .send(error(
                event,
                400,
                "unknown message type: expected `universal.create`",
            ))
            .await;
        return;
    }
    let request = match build_request(path, session, request, event) {
        Ok(r) => r,
        Err(e) => {
            let (status, _) = e.status_and_code();
            let _ = out
                .send(error(event, status.as_u16(), &e.to_string()))
                .await;
            return;
        }
    };
    let response = match universal(edge, request, Instant::now()).await {
        Ok(response) => response,
        Err(e) => {
            let (status, _) = e.status_and_code();
            let _ = out
                .send(error(event, status.as_u16(), &e.to_string()))
                .await;
            return;
        }
    };
    relay(out, response, event).await;
}

/// The HTTP request a message stands for: the session's headers, the message's `cf-aig-*`
/// headers over them, the event id, and the steps as the body (step headers stay in the
/// steps, bound for the provider).
fn build_request(
    path: &str,
    session: &HeaderMap,
    request: &Value,
    event_id: Option<&str>,
) -> Result<Request, EdgeError> {
    let invalid = |reason: &str| EdgeError::InvalidStep {
        field: "request".into(),
        reason: reason.into(),
    };
    let mut headers = session.clone();
    let mut steps = match request {
        Value::Object(_) => vec![request.clone()],
        Value::Array(steps) => steps.clone(),
        _ => return Err(invalid("must be a request object or an array of steps")),
    };
    for step in &mut steps {
        let Some(fields) = step.as_object_mut() else {
            continue;
        };
        fields.remove("eventId");
        if let Some(Value::Object(step_headers)) = fields.get_mut("headers") {
            let control: Vec<String> = step_headers
                .keys()
                .filter(|k| k.to_ascii_lowercase().starts_with("cf-aig-"))
                .cloned()
                .collect();
            for name in control {
                if let (Some(Value::String(v)), Ok(name)) = (
                    step_headers.remove(&name),
                    HeaderName::from_bytes(name.as_bytes()),
                ) && let Ok(value) = HeaderValue::from_str(&v)
                {
                    headers.insert(name, value);
                }
            }
        }
    }
    if let Some(id) = event_id {
        let value = HeaderValue::from_str(id).map_err(|_| invalid("eventId is not valid text"))?;
        headers.insert(HeaderName::from_static(EVENT_ID_HEADER), value);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut http = Request::new(Body::from(Value::Array(steps).to_string()));
    *http.method_mut() = Method::POST;
    *http.uri_mut() = Uri::try_from(path).map_err(|_| invalid("bad path"))?;
    *http.headers_mut() = headers;
    Ok(http)
}

/// Sends a response as `universal.created`, or as a stream of `universal.stream` messages.
async fn relay(out: &mpsc::Sender<Message>, response: Response, event_id: Option<&str>) {
    // In a block: a borrow of the response (whose body is not `Sync`) must not live across
    // an await.
    let (content_type, metadata) = {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(header::CONTENT_TYPE.as_str());
        let metadata = json!({
            "cacheStatus": header(CACHE_STATUS_HEADER).unwrap_or_else(|| "MISS".to_owned()),
            "eventId": event_id,
            "logId": header(LOG_ID_HEADER),
            "step": header(STEP_HEADER).and_then(|s| s.parse::<u32>().ok()),
            "contentType": content_type,
            "status": response.status().as_u16(),
        });
        (content_type, metadata)
    };
    let streamed = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let mut body = response.into_body();
    if !streamed {
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let _ = out
                    .send(error(
                        event_id,
                        502,
                        &format!("reading the response failed: {e}"),
                    ))
                    .await;
                return;
            }
        };
        let response = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let _ = out
            .send(text(
                json!({"type": "universal.created", "metadata": metadata, "response": response}),
            ))
            .await;
        return;
    }
    let _ = out
        .send(text(
            json!({"type": "universal.created", "metadata": metadata}),
        ))
        .await;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    let chunk = String::from_utf8_lossy(&data).into_owned();
                    let message = json!({"type": "universal.stream",
                                         "metadata": {"eventId": event_id}, "chunk": chunk});
                    if out.send(text(message)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = out
                    .send(error(event_id, 502, &format!("the stream broke: {e}")))
                    .await;
                return;
            }
        }
    }
    let _ = out
        .send(text(
            json!({"type": "universal.done", "metadata": metadata}),
        ))
        .await;
}
