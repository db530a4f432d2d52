//! The response body type: a whole buffer or a paced sequence of chunks, with
//! an optional injected failure halfway through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A response body that yields its chunks in order, optionally sleeping
/// between them and optionally failing after half of them (which makes hyper
/// abort the connection instead of finishing the body).
pub(crate) struct MockBody {
    source: Source,
    pacer: Option<Pacer>,
    sent: usize,
    fail_after: Option<usize>,
    yielded_before_failing: bool,
}

enum Source {
    One(Option<Bytes>),
    Many(std::vec::IntoIter<Bytes>),
}

impl Source {
    fn next(&mut self) -> Option<Bytes> {
        match self {
            Source::One(bytes) => bytes.take(),
            Source::Many(chunks) => chunks.next(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Source::One(bytes) => bytes.is_none(),
            Source::Many(chunks) => chunks.as_slice().is_empty(),
        }
    }
}

impl MockBody {
    /// A body sent in one piece with an exact length.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            source: Source::One(Some(bytes.into())),
            pacer: None,
            sent: 0,
            fail_after: None,
            yielded_before_failing: false,
        }
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self {
            source: Source::One(None),
            pacer: None,
            sent: 0,
            fail_after: None,
            yielded_before_failing: false,
        }
    }

    /// A body sent chunk by chunk, waiting `delay` between chunks; with
    /// `fail_midway` it errors after half of the chunks (at least one).
    pub(crate) fn chunks(chunks: Vec<Bytes>, delay: Option<Duration>, fail_midway: bool) -> Self {
        let fail_after = fail_midway.then(|| (chunks.len() / 2).max(1));
        Self {
            source: Source::Many(chunks.into_iter()),
            pacer: delay.map(Pacer::new),
            sent: 0,
            fail_after,
            yielded_before_failing: false,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.fail_after == Some(this.sent) {
            if !this.yielded_before_failing {
                // Give hyper one turn to flush the headers and the chunks so
                // far onto the socket; failing right away would discard them.
                this.yielded_before_failing = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.fail_after = None;
            this.source = Source::One(None);
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock: injected mid-stream reset",
            ))));
        }
        if this.source.is_empty() {
            return Poll::Ready(None);
        }
        if this.sent > 0
            && let Some(pacer) = &mut this.pacer
        {
            ready!(pacer.poll_wait(cx));
        }
        match this.source.next() {
            Some(chunk) => {
                this.sent += 1;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.fail_after.is_none() && self.source.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.source, self.fail_after) {
            (Source::One(bytes), None) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            _ => SizeHint::default(),
        }
    }
}

/// Sleeps a fixed delay before each chunk after the first, reusing one timer.
struct Pacer {
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Pacer {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            sleep: None,
            armed: false,
        }
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let deadline = Instant::now() + self.delay;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        if let Some(sleep) = &mut self.sleep {
            ready!(sleep.as_mut().poll(cx));
        }
        self.armed = false;
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_has_exact_size() {
        let body = MockBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"hello");
    }

    #[tokio::test]
    async fn chunked_body_fails_after_half() {
        let chunks = [&b"a"[..], b"b", b"c", b"d"]
            .map(Bytes::from_static)
            .to_vec();
        let mut body = MockBody::chunks(chunks, None, true);
        let mut seen = Vec::new();
        let err = loop {
            match body.frame().await {
                Some(Ok(frame)) => seen.push(frame.into_data().expect("data frame")),
                Some(Err(err)) => break err,
                None => panic!("body ended without the injected error"),
            }
        };
        assert_eq!(seen, ["a", "b"]);
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn chunks_are_paced() {
        let chunks = [&b"a"[..], b"b", b"c"].map(Bytes::from_static).to_vec();
        let body = MockBody::chunks(chunks, Some(Duration::from_millis(30)), false);
        let start = Instant::now();
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(&bytes[..], b"abc");
        assert!(start.elapsed() >= Duration::from_millis(60));
    }
}
