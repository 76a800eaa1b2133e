//! Where audit lines go. Each request formats its line itself (one buffer, serde_json for the
//! JSON form) and queues it; one writer thread writes whatever has queued up with one `write`,
//! so a busy gateway makes one system call per batch instead of one per request. After each
//! write the writer lingers a moment before it looks again, so under load requests queue
//! their lines without waking it (a wake-up is a futex call and a context switch, which
//! measured about a tenth of the gateway's CPU when taken per request). The queue is
//! bounded: when the log's pipe or file stops taking lines, requests wait for room, as they did
//! when each wrote its own line; no line is dropped.
//!
//! Without an installed sink (the library used on its own, as the end-to-end tests do), audit
//! lines are not written: like a `tracing` event with no subscriber.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

/// Lines queued at most before a request waits for the writer.
const QUEUE: usize = 8192;
/// Bytes gathered into one write at most.
const BATCH_BYTES: usize = 64 * 1024;
/// How long the writer waits after a write before it takes the next batch: lines reach the
/// log at most this much later, and at most a thousand wake-ups a second are spent on it.
const LINGER: Duration = Duration::from_millis(1);
/// How long [`flush`] waits for the writer at exit.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The two line formats of `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(SyncSender<()>),
}

struct Sink {
    queue: SyncSender<Message>,
    format: Format,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Starts the writer thread on `out`; a second call (commands run in one process, as tests do)
/// keeps the first sink.
pub(crate) fn install(format: Format, out: impl Write + Send + 'static) {
    if SINK.get().is_some() {
        return;
    }
    let (queue, lines) = sync_channel(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("scopegate-audit".into())
        .spawn(move || write_batches(&lines, out));
    if spawned.is_ok() {
        let _ = SINK.set(Sink { queue, format });
    }
}

/// The installed format, or `None` when audit lines are not written.
pub(crate) fn format() -> Option<Format> {
    SINK.get().map(|s| s.format)
}

/// Queues one finished line (ending in `\n`).
pub(crate) fn send(line: Vec<u8>) {
    if let Some(sink) = SINK.get() {
        let _ = sink.queue.send(Message::Line(line));
    }
}

/// Waits (a bounded time) until every line queued so far is written: called before exit.
pub(crate) fn flush() {
    let Some(sink) = SINK.get() else { return };
    let (done, written) = sync_channel(1);
    if sink.queue.send(Message::Flush(done)).is_ok() {
        let _ = written.recv_timeout(FLUSH_WAIT);
    }
}

fn write_batches(lines: &Receiver<Message>, mut out: impl Write) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut waiting = Vec::new();
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH_BYTES {
                next = lines.try_recv().ok();
            }
        }
        // A log that cannot be written is not a reason to stop serving; its lines are lost.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        std::thread::sleep(LINGER);
    }
}
