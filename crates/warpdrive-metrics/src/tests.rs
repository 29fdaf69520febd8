use super::*;

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

#[test]
fn every_family_renders_with_its_type() {
    let m = Metrics::new("1.2.3", "abc123");
    let b = m.backend("s3-archive");
    b.request(
        Request::Get,
        std::time::Duration::from_millis(3),
        std::time::Duration::from_millis(9),
    );
    b.read_bytes.inc_by(4096);
    b.error(ErrorKind::Throttled);
    m.fuse.op(Op::Read);
    m.fuse.error(Op::Lookup, 2);
    m.fuse
        .read_latency
        .observe_duration(std::time::Duration::from_micros(80));
    m.fuse.read_size.observe(131_072);
    m.set_cache_source(Box::new(|| CacheFigures {
        used_bytes: 10,
        capacity_bytes: 100,
        ..Default::default()
    }));
    let s = parse(&m.render());
    let kind = |name: &str| {
        s.samples
            .iter()
            .find(|x| x.metric == name)
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(_) => "counter",
                prometheus_parse::Value::Gauge(_) => "gauge",
                prometheus_parse::Value::Histogram(_) => "histogram",
                _ => "other",
            })
    };
    for (name, want) in [
        ("warpdrive_fuse_operations_total", "counter"),
        ("warpdrive_fuse_errors_total", "counter"),
        ("warpdrive_fuse_read_latency_seconds", "histogram"),
        ("warpdrive_fuse_read_size_bytes", "histogram"),
        ("warpdrive_cache_hit_blocks_total", "counter"),
        ("warpdrive_cache_used_bytes", "gauge"),
        ("warpdrive_backend_requests_total", "counter"),
        ("warpdrive_backend_read_bytes_total", "counter"),
        ("warpdrive_backend_first_byte_seconds", "histogram"),
        ("warpdrive_build_info", "gauge"),
        ("warpdrive_uptime_seconds", "gauge"),
    ] {
        assert_eq!(kind(name), Some(want), "{name}");
    }
    let sample = |name: &str, label: (&str, &str)| {
        s.samples
            .iter()
            .find(|x| x.metric == name && x.labels.get(label.0) == Some(label.1))
            .map(|x| x.value.clone())
    };
    for (name, label, counter) in [
        ("warpdrive_fuse_operations_total", ("op", "read"), true),
        ("warpdrive_fuse_errors_total", ("errno", "ENOENT"), true),
        (
            "warpdrive_backend_errors_total",
            ("kind", "throttled"),
            true,
        ),
        ("warpdrive_build_info", ("commit", "abc123"), false),
    ] {
        let got = sample(name, label);
        assert!(
            matches!(
                (&got, counter),
                (Some(prometheus_parse::Value::Counter(v)), true)
                    | (Some(prometheus_parse::Value::Gauge(v)), false) if *v == 1.0
            ),
            "{name}: {got:?}"
        );
    }
    let lat = s
        .samples
        .iter()
        .find(|x| x.metric == "warpdrive_fuse_read_latency_seconds")
        .expect("latency histogram");
    let prometheus_parse::Value::Histogram(buckets) = &lat.value else {
        panic!("latency is not a histogram: {:?}", lat.value)
    };
    let le = |b: f64| {
        buckets
            .iter()
            .find(|x| (x.less_than - b).abs() < 1e-12)
            .map(|x| x.count)
    };
    assert_eq!(le(0.0001), Some(1.0), "80 µs is ≤ 100 µs");
    assert_eq!(le(0.00005), Some(0.0));
    for bound in [0.0001, 0.0005, 0.001, 0.005, 0.05] {
        assert!(le(bound).is_some(), "bucket {bound} missing");
    }
}

/// Every metric name the shipped Grafana dashboard and Prometheus rules use is one the daemon
/// serves (a renamed metric would leave an empty panel).
#[test]
fn the_shipped_dashboard_and_rules_use_real_names() {
    let m = Metrics::new("v", "c");
    let b = m.backend("b");
    b.error(ErrorKind::Server);
    m.fuse.op(Op::Read);
    m.set_cache_source(Box::new(CacheFigures::default));
    m.auth_token_expiry
        .get_or_create(&AuthLabels {
            backend: "b".into(),
        })
        .set(1.0);
    m.shared.request("get", "hit");
    m.shared.bytes("read", 1);
    m.shared.invalid("data");
    m.shared.avoided("b", 1);
    m.shared.wait("filled", std::time::Duration::from_millis(3));
    m.plan.entry("j", 0, "ahead");
    m.plan.fetched("j", 0, 1);
    m.plan.lead("j", 0, 1, 1.0);
    m.plan
        .read_wait("b", Some(("j", 0)), std::time::Duration::from_millis(1));
    let served = m.render();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut used = 0;
    for file in ["grafana/warpdrive.json", "prometheus/warpdrive-rules.yml"] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).expect("dashboard is JSON");
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find("warpdrive_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            // `warpdrive:...` recording rules are not metric names.
            assert!(
                served.contains(&format!("\n{name}"))
                    || served.contains(&format!("\n{name}{{"))
                    || served.contains(&format!("# TYPE {name} ")),
                "{file} uses {name}, which the daemon does not serve"
            );
            used += 1;
        }
    }
    assert!(used > 20, "the dashboard and rules use the metrics");
}
