//! What can be checked of the container image and the Kubernetes examples without a Docker
//! engine or a cluster: the Dockerfile's user, pins and health check; the built-in config; the
//! minimum Rust version; the manifests' image references, service links and users. (The
//! manifests' schemas are validated by `.ci/run` with kubernetes-validate.)

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// `X.Y.Z` as numbers.
fn version(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap()).collect()
}

#[test]
fn dockerfile_runs_as_a_numeric_user_on_pinned_bases_with_a_healthcheck() {
    let docker = read("Dockerfile");
    let users: Vec<_> = docker.lines().filter(|l| l.starts_with("USER ")).collect();
    assert_eq!(users, ["USER 65532:65532"], "numeric, so runAsNonRoot can check it");
    // The builder is pinned by an exact version tag, the same toolchain rust-version allows.
    let build = docker.lines().find_map(|l| l.strip_prefix("ARG BUILD_IMAGE=")).expect("BUILD_IMAGE");
    let tag = build.rsplit_once(':').unwrap().1;
    let exact = tag.split('-').next().unwrap();
    assert_eq!(version(exact).len(), 3, "exact version tag: {build}");
    let cargo = read("Cargo.toml");
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    assert!(version(msrv) <= version(exact), "rust-version {msrv} is not newer than the builder {exact}");
    // Every FROM uses a pinned ARG, nothing floats to `latest`.
    for from in docker.lines().filter(|l| l.starts_with("FROM ")) {
        assert!(
            from.starts_with("FROM ${BUILD_IMAGE}") || from.starts_with("FROM ${RUNTIME_IMAGE}"),
            "{from}"
        );
    }
    assert!(!docker.contains(":latest"));
    let hc = docker.lines().skip_while(|l| !l.starts_with("HEALTHCHECK")).nth(1).unwrap_or_default();
    assert!(hc.contains(r#"CMD ["/usr/local/bin/oauth-shim", "healthcheck"]"#), "{hc}");
    assert!(docker.contains("COPY config/container.toml /etc/oauth-shim/oauth-shim.toml"));
}

#[test]
fn the_images_built_in_config_listens_on_all_interfaces() {
    let path = format!("{}/config/container.toml", env!("CARGO_MANIFEST_DIR"));
    let out = crate::support::bin().args(["check-config", "--config", &path]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"0.0.0.0:8080\""), "{text}");
    assert!(text.contains("listen = \"0.0.0.0:9901\""), "{text}");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.contains("no [[clients]] configured"), "it says so");
    // Without an admin token the operator routes stay closed on 0.0.0.0, and it says so.
    assert!(warnings.contains("beyond loopback and no admin token is set"), "{warnings}");
}

#[test]
fn manifests_pin_images_turn_service_links_off_and_run_as_the_images_user() {
    let dir = format!("{}/deploy", env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![format!("{dir}/sidecar.yaml")];
    for e in std::fs::read_dir(format!("{dir}/shared-service")).unwrap() {
        files.push(e.unwrap().path().display().to_string());
    }
    let mut pods = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for image in text.lines().filter_map(|l| l.trim().strip_prefix("image: ")) {
            let image = image.split_whitespace().next().unwrap();
            assert!(image.starts_with("registry.example.com/"), "placeholder registry: {file}: {image}");
            let pinned = image.contains("@sha256:")
                || image
                    .rsplit_once(':')
                    .is_some_and(|(_, t)| t.chars().next().is_some_and(|c| c.is_ascii_digit()));
            assert!(pinned, "{file}: {image} is pinned by version tag or digest");
        }
        if text.contains("kind: Deployment") {
            pods += 1;
            assert!(text.contains("enableServiceLinks: false"), "{file}");
            assert!(text.contains("runAsUser: 65532") && text.contains("runAsNonRoot: true"), "{file}");
            assert!(text.contains("\"healthcheck\""), "{file}: an exec probe with the healthcheck command");
        }
    }
    assert_eq!(pods, 2, "the sidecar and the shared service");
    let shared = std::fs::read_to_string(format!("{dir}/shared-service/deployment.yaml")).unwrap();
    let replicas: u32 =
        shared.lines().find_map(|l| l.trim().strip_prefix("replicas: ")).unwrap().parse().unwrap();
    assert!(replicas >= 2);
    let service = std::fs::read_to_string(format!("{dir}/shared-service/service.yaml")).unwrap();
    let spec: String = service.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(!spec.contains("9901") && !spec.contains("admin"), "the admin port stays off the Service");
    let policy = std::fs::read_to_string(format!("{dir}/shared-service/networkpolicy.yaml")).unwrap();
    assert!(policy.contains("port: 9901") && policy.contains("kubernetes.io/metadata.name: monitoring"));
    for kind in ["PodDisruptionBudget", "NetworkPolicy", "Service", "ConfigMap", "Deployment"] {
        assert!(
            files.iter().any(|f| std::fs::read_to_string(f).unwrap().contains(&format!("kind: {kind}\n"))),
            "{kind}"
        );
    }
    assert!(shared.contains("secretName: oauth-shim-secrets"), "a Secret reference");
}
