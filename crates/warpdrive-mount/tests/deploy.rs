//! What ships for deployment: the Kubernetes manifests validate against the Kubernetes
//! schemas (offline, `kubernetes-validate --strict`) and agree with each other and with the
//! daemon (the ConfigMap's config is a valid WarpDrive config whose mount point, cache and
//! metrics port are the DaemonSet's; the training pod mounts what the DaemonSet exports).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;
use warpdrive_config::Config;

fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(kubernetes_dir().join(name)).expect(name);
    serde_yaml_ng::from_str(&text).expect(name)
}

/// The value at a `/`-separated path of keys and list indexes.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('/').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {:?}", at(v, path)))
}

/// The entry of list `list` whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence()
        .and_then(|s| s.iter().find(|e| e["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("no entry named {name} in {list:?}"))
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kubernetes_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate (make deps installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).expect("name");
        // The Prometheus Operator's PodMonitor has no schema here: checked below by hand.
        if name == "podmonitor.yaml" {
            continue;
        }
        assert!(
            said.contains(&format!("{name} passed")),
            "{name} was not validated: {said}"
        );
    }
}

#[test]
fn the_manifests_agree_with_each_other_and_with_the_daemon() {
    let ds = manifest("daemonset.yaml");
    let cm = manifest("configmap.yaml");
    let config = Config::parse(
        text(&cm, "data/config.yaml"),
        Path::new("configmap.yaml: data/config.yaml"),
    )
    .unwrap_or_else(|e| panic!("the ConfigMap's config: {e}"));

    let pod = at(&ds, "spec/template/spec");
    let container = at(pod, "containers/0");
    assert_eq!(
        at(container, "securityContext/privileged").as_bool(),
        Some(true),
        "FUSE and mount propagation need a privileged container"
    );
    let mounts = at(container, "volumeMounts");
    // The mount point is the one the DaemonSet shares with the node.
    let mnt = mounts
        .as_sequence()
        .and_then(|s| {
            s.iter()
                .find(|m| m["mountPropagation"].as_str() == Some("Bidirectional"))
        })
        .expect("a Bidirectional mount");
    assert_eq!(Path::new(text(mnt, "mountPath")), config.mount_point);
    let host_mnt = text(
        named(at(pod, "volumes"), text(mnt, "name")),
        "hostPath/path",
    );
    // The cache is on a hostPath at the config's cache.dir.
    let cache = mounts
        .as_sequence()
        .and_then(|s| {
            s.iter()
                .find(|m| Path::new(m["mountPath"].as_str().unwrap_or("")) == config.cache.dir)
        })
        .expect("a volume at cache.dir");
    assert!(
        at(named(at(pod, "volumes"), text(cache, "name")), "hostPath").is_mapping(),
        "the cache is on the node's disk"
    );
    // The config file is where the binaries look by default.
    let cfg = named(mounts, "config");
    assert_eq!(
        Path::new(text(cfg, "mountPath")).join("config.yaml"),
        Path::new(warpdrive_config::DEFAULT_CONFIG_PATH)
    );
    // Metrics: the container port is the config's.
    let port = named(at(container, "ports"), "metrics");
    assert_eq!(
        at(port, "containerPort").as_u64(),
        Some(u64::from(config.metrics.listen.port()))
    );
    // Probes ask warpdrive-ctl whether the mount serves.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let cmd: Vec<&str> = at(container, &format!("{probe}/exec/command"))
            .as_sequence()
            .expect(probe)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(&cmd[..3], ["warpdrive-ctl", "status", "--wait"], "{probe}");
        assert!(
            cmd.contains(&"--mount-only"),
            "{probe} asks no store: {cmd:?}"
        );
    }
    // The headless Service and the PodMonitor select the DaemonSet's pods and its port.
    let labels = at(&ds, "spec/template/metadata/labels");
    let svc = manifest("service.yaml");
    assert_eq!(text(&svc, "spec/clusterIP"), "None");
    for (k, v) in at(&svc, "spec/selector").as_mapping().expect("selector") {
        assert_eq!(&labels[k], v, "the Service selects the DaemonSet's pods");
    }
    let pm = manifest("podmonitor.yaml");
    assert_eq!(text(&pm, "kind"), "PodMonitor");
    for (k, v) in at(&pm, "spec/selector/matchLabels")
        .as_mapping()
        .expect("selector")
    {
        assert_eq!(&labels[k], v, "the PodMonitor selects the DaemonSet's pods");
    }
    assert_eq!(text(&pm, "spec/podMetricsEndpoints/0/port"), "metrics");
    // The training pod sees the node's mount, read-only, as the host propagates it.
    let train = manifest("training-pod.yaml");
    let tm = at(&train, "spec/containers/0/volumeMounts/0");
    assert_eq!(text(tm, "mountPropagation"), "HostToContainer");
    assert_eq!(at(tm, "readOnly").as_bool(), Some(true));
    assert_eq!(
        text(
            named(at(&train, "spec/volumes"), text(tm, "name")),
            "hostPath/path"
        ),
        host_mnt
    );
    // Every namespaced object is in the namespace the manifests create.
    let ns = text(&manifest("namespace.yaml"), "metadata/name").to_string();
    for f in [
        "serviceaccount.yaml",
        "configmap.yaml",
        "daemonset.yaml",
        "service.yaml",
        "networkpolicy.yaml",
        "podmonitor.yaml",
    ] {
        assert_eq!(text(&manifest(f), "metadata/namespace"), ns, "{f}");
    }
    assert_eq!(
        text(pod, "serviceAccountName"),
        text(&manifest("serviceaccount.yaml"), "metadata/name")
    );
}
