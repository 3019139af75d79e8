//! A `tracing` subscriber that keeps the events it sees, for tests that read what the mesh
//! logs.
//!
//! It is installed once per test binary as the global default (a scoped subscriber per test
//! races with other tests' threads over tracing's per-callsite interest cache), and keeps each
//! event with the thread it happened on: a test on a current-thread runtime reads its own
//! events with [`Capture::events`].

#![allow(dead_code, clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::{
    cell::RefCell,
    fmt::Debug,
    sync::{
        Mutex, Once,
        atomic::{AtomicU64, Ordering},
    },
    thread::ThreadId,
};

use tracing::{
    Event, Metadata, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
    subscriber::Interest,
};

/// One event: its target, level, and fields (`message` included) as text, then the fields of
/// the spans it happened in, innermost first.
#[derive(Clone, Debug)]
pub struct Captured {
    pub thread: ThreadId,
    pub target: String,
    pub level: tracing::Level,
    pub fields: Vec<(String, String)>,
}

impl Captured {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn message(&self) -> &str {
        self.field("message").unwrap_or("")
    }
}

/// The events of the thread that made it (see the module docs).
#[derive(Clone, Debug)]
pub struct Capture {
    thread: ThreadId,
}

/// Starts capturing the `mesh_tower` events of this thread.
pub fn capture() -> Capture {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Collector).unwrap();
    });
    Capture {
        thread: std::thread::current().id(),
    }
}

impl Capture {
    pub fn events(&self) -> Vec<Captured> {
        EVENTS
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.thread == self.thread)
            .cloned()
            .collect()
    }

    pub fn with_target(&self, target: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|e| e.target == target)
            .collect()
    }
}

static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());
/// A span: its id, its parent's, its fields.
type SpanRecord = (u64, Option<u64>, Vec<(String, String)>);

static SPANS: Mutex<Vec<SpanRecord>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Collector;

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Collector {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.target().starts_with("mesh_tower") {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("mesh_tower")
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut fields = Vec::new();
        span.record(&mut Fields(&mut fields));
        let parent = span
            .parent()
            .map(Id::into_u64)
            .or_else(|| ENTERED.with(|e| e.borrow().last().copied()));
        SPANS.lock().unwrap().push((id, parent, fields));
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut spans = SPANS.lock().unwrap();
        if let Some((_, _, fields)) = spans.iter_mut().find(|(id, _, _)| *id == span.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let spans = SPANS.lock().unwrap();
        let mut at = event
            .parent()
            .map(Id::into_u64)
            .or_else(|| ENTERED.with(|e| e.borrow().last().copied()));
        while let Some(id) = at {
            let Some((_, parent, span_fields)) = spans.iter().find(|(i, _, _)| *i == id) else {
                break;
            };
            fields.extend(span_fields.iter().cloned());
            at = *parent;
        }
        drop(spans);
        EVENTS.lock().unwrap().push(Captured {
            thread: std::thread::current().id(),
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, span: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        ENTERED.with(|e| {
            let mut entered = e.borrow_mut();
            if let Some(at) = entered.iter().rposition(|id| *id == span.into_u64()) {
                entered.remove(at);
            }
        });
    }
}
