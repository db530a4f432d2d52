//! A WebSocket session when the edge shuts down: the request in flight is still answered,
//! then the server closes the connection with 1001 (going away), and the edge's shutdown
//! waits for that before it drains its logs — so the request's log is written too.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::Harness;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn shutting_down_answers_what_is_in_flight_then_closes_with_going_away() {
    let h = Harness::start().await;
    let started = std::time::Instant::now();
    let url = format!("ws://{}/v1/acct1/default", h.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let request = json!({"type": "universal.create", "request": {
        "eventId": "slow", "provider": "openai", "endpoint": "chat/completions",
        "headers": {"x-mock-delay-ms": "500"},
        "query": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}});
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    // Let the request reach the upstream, then shut the edge down while it waits there.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut h = h;
    let read = async {
        let answer = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer before the deadline")
            .expect("a message")
            .unwrap();
        let close = socket.next().await;
        (answer, close)
    };
    let ((), (answer, close)) = tokio::join!(h.stop(), read);
    let Message::Text(text) = answer else {
        panic!("expected the answer, got {answer:?}");
    };
    let answer: Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(answer["type"], "universal.created", "{answer}");
    assert_eq!(answer["metadata"]["eventId"], "slow");
    assert_eq!(answer["metadata"]["status"], 200, "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "answered after the upstream's delay, across the shutdown"
    );
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let sink = h.sink.clone();
    assert_eq!(sink.entries().len(), 1, "the answered request was logged");
}
