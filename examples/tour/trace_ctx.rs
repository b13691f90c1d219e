//! infra-trace-ctx: one trace id across six services finds the slow one, and the spans leave
//! the process the way a collector receives them: batched off the request path, encoded as OTLP.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

use infra_common::ManualClock;
use infra_trace_ctx::{
    BatchSpanProcessor, MemoryExporter, OtlpExporter, Propagator, SpanData, SpanKind,
    TraceContextPropagator, Tracer, Value,
};

/// One service in the simulated checkout: its own work, then its calls, in order.
struct Hop {
    service: &'static str,
    operation: &'static str,
    /// Time spent in the service itself, half before its calls and half after.
    own_millis: u64,
    calls: &'static [Hop],
}

const CHECKOUT: Hop = Hop {
    service: "gateway",
    operation: "POST /checkout",
    own_millis: 4,
    calls: &[
        Hop {
            service: "auth",
            operation: "verify token",
            own_millis: 6,
            calls: &[],
        },
        Hop {
            service: "cart",
            operation: "load cart",
            own_millis: 10,
            calls: &[
                Hop {
                    service: "pricing",
                    operation: "price items",
                    own_millis: 12,
                    calls: &[],
                },
                // The slow one: a cold stock cache.
                Hop {
                    service: "inventory",
                    operation: "reserve stock",
                    own_millis: 310,
                    calls: &[],
                },
            ],
        },
        Hop {
            service: "payment",
            operation: "charge card",
            own_millis: 45,
            calls: &[],
        },
    ],
};

struct Mesh {
    clock: ManualClock,
    /// Every tracer ends its spans into this processor, which hands them to `received` in
    /// batches from its own thread.
    processor: BatchSpanProcessor,
    tracers: HashMap<&'static str, Tracer>,
}

impl Mesh {
    fn tracer(&self, service: &'static str) -> Tracer {
        self.tracers.get(service).cloned().unwrap_or_else(|| {
            Tracer::builder()
                .service(service)
                .clock(self.clock.clone())
                .exporter(self.processor.clone())
                .build()
        })
    }

    /// Serves one request: extracts the caller's context from the headers, works, and calls
    /// the next services with the context injected into their headers.
    fn serve(&self, hop: &Hop, headers: &HashMap<String, String>, depth: i64) {
        let tracer = self.tracer(hop.service);
        let remote = TraceContextPropagator.extract(headers);
        let mut server = tracer
            .span(hop.operation)
            .kind(SpanKind::Server)
            .remote(&remote)
            .start();
        server.set_attribute("depth", depth);
        self.clock
            .advance(Duration::from_millis(hop.own_millis / 2));
        for call in hop.calls {
            let _in_server = server.attach();
            let mut client = tracer.span(call.service).kind(SpanKind::Client).start();
            let mut outgoing = HashMap::new();
            let cx = remote.clone().with_span(client.context().clone());
            TraceContextPropagator.inject(&cx, &mut outgoing);
            self.clock.advance(Duration::from_micros(300)); // the network, each way
            self.serve(call, &outgoing, depth + 1);
            self.clock.advance(Duration::from_micros(300));
            client.end();
        }
        self.clock
            .advance(Duration::from_millis(hop.own_millis - hop.own_millis / 2));
        server.end();
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let clock = ManualClock::new();
    let received = MemoryExporter::new();
    let processor = BatchSpanProcessor::builder(received.clone()).build()?;
    let services = ["gateway", "auth", "cart", "pricing", "inventory", "payment"];
    let tracers = services
        .into_iter()
        .map(|service| {
            let tracer = Tracer::builder()
                .service(service)
                .clock(clock.clone())
                .exporter(processor.clone())
                .build();
            (service, tracer)
        })
        .collect();
    let mesh = Mesh {
        clock,
        processor,
        tracers,
    };
    // The browser's request arrives without a traceparent: the gateway starts the trace.
    mesh.serve(&CHECKOUT, &HashMap::new(), 0);

    // Ending a span only queued it; a flush waits until the exporter has every span.
    mesh.processor.force_flush(Duration::from_secs(5))?;
    let spans = received.take();
    let stats = mesh.processor.stats();
    let mut otlp = Vec::new();
    OtlpExporter::builder().build()?.encode(&spans, &mut otlp);
    println!(
        "export: {} spans queued as they ended, {} exported by the batch thread, {} dropped; \
         as one OTLP/HTTP protobuf request: {} bytes",
        stats.queued,
        stats.exported,
        stats.dropped_queue_full,
        otlp.len()
    );

    let mut servers: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    servers.sort_by_key(|s| s.start);
    let root = servers.first().ok_or("no spans recorded")?;
    let trace_id = root.context.trace_id();
    if spans.iter().any(|s| s.context.trace_id() != trace_id) {
        return Err("a hop lost the trace id".into());
    }
    let total = root.duration();
    println!(
        "checkout trace {trace_id}: {} spans from {} services, {:.1} ms end to end, one trace id on every hop",
        spans.len(),
        servers.len(),
        millis(total)
    );

    // Self time: a server span's duration minus the calls it made.
    let self_time = |server: &SpanData| {
        let calls: Duration = spans
            .iter()
            .filter(|s| s.parent_span_id == Some(server.context.span_id()))
            .map(SpanData::duration)
            .sum();
        server.duration().saturating_sub(calls)
    };
    let slowest = servers
        .iter()
        .copied()
        .max_by_key(|s| self_time(s))
        .ok_or("no server spans")?;

    const WIDTH: usize = 48;
    let width = WIDTH as f64;
    for server in &servers {
        let offset = server.start.duration_since(root.start)?;
        let depth = match server.attribute("depth") {
            Some(Value::I64(depth)) => usize::try_from(*depth).unwrap_or(0),
            _ => 0,
        };
        // Rounded bar ends on a fixed width; the fractions are display-only.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (lead, len) = (
            (offset.as_secs_f64() / total.as_secs_f64() * width).round() as usize,
            ((server.duration().as_secs_f64() / total.as_secs_f64() * width).round() as usize)
                .max(1),
        );
        let mut line = format!(
            "{:indent$}{:<w$}",
            "",
            server.service,
            indent = depth * 2,
            w = 14 - depth * 2
        );
        write!(
            line,
            "|{}{}{}|",
            " ".repeat(lead),
            "#".repeat(len),
            " ".repeat(WIDTH.saturating_sub(lead + len))
        )?;
        write!(
            line,
            " {:>6.1} ms +{:>5.1}",
            millis(server.duration()),
            millis(offset)
        )?;
        if std::ptr::eq(*server, slowest) {
            write!(
                line,
                "  <- slow: {:.0} ms of its own",
                millis(self_time(server))
            )?;
        }
        println!("{line}");
    }
    println!(
        "verdict: {} ({}) spent {:.0}% of the checkout in its own code",
        slowest.service,
        slowest.name,
        100.0 * self_time(slowest).as_secs_f64() / total.as_secs_f64()
    );
    if slowest.service != "inventory" {
        return Err(format!(
            "expected inventory to be the slow hop, found {}",
            slowest.service
        )
        .into());
    }
    Ok(())
}
