//! `[state]`'s Redis topologies: the Sentinel keys and the Cluster key, each alone and valid.

use super::tests::{CLIENT, load_toml};

#[test]
fn sentinel_keys_come_together_and_replace_the_url() {
    let redis = |keys: &str| {
        let file = std::env::temp_dir().join(format!("oauth-shim-cfg-state-keys-{}", std::process::id()));
        std::fs::write(&file, "ab".repeat(32)).unwrap();
        let toml = format!(
            "{CLIENT}[state]\nbackend = \"redis\"\nencryption_key_file = \"{}\"\n{keys}",
            file.display()
        );
        load_toml(&toml).map(|_| ()).map_err(|e| e.to_string())
    };
    redis("sentinels = [\"10.0.0.1:26379\", \"s2:26379\"]\nmaster_name = \"m\"\n").expect("no url needed");
    let with_url = "url = \"rediss://user@ignored:1/2\"\nsentinels = [\"s:26379\"]\nmaster_name = \"m\"\n";
    redis(&format!("{with_url}sentinel_tls = true\n")).expect("url gives scheme, user, db");
    for (keys, needle) in [
        ("sentinels = [\"s:26379\"]\n", "needs state.master_name"),
        ("sentinels = [\"s\"]\nmaster_name = \"m\"\n", "is not host:port"),
        ("url = \"redis://r:6379\"\nmaster_name = \"m\"\n", "need state.sentinels"),
        (
            "sentinels = [\"s:1\"]\nmaster_name = \"m\"\nsentinel_ca_file = \"/x\"\n",
            "needs state.sentinel_tls",
        ),
        ("", "state.url is required"),
    ] {
        let err = redis(keys).expect_err(keys);
        assert!(err.contains(needle), "{keys}: {err}");
    }
}

#[test]
fn cluster_nodes_stand_alone_and_each_is_a_node_address() {
    let redis = |keys: &str| {
        let file = std::env::temp_dir().join(format!("oauth-shim-cfg-cluster-keys-{}", std::process::id()));
        std::fs::write(&file, "ab".repeat(32)).unwrap();
        let toml = format!(
            "{CLIENT}[state]\nbackend = \"redis\"\nencryption_key_file = \"{}\"\n{keys}",
            file.display()
        );
        load_toml(&toml).map_err(|e| e.to_string())
    };
    let cfg = redis("cluster_nodes = [\"10.0.0.1:6379\", \"r2:6380\"]\n").expect("no url needed");
    assert_eq!(cfg.state.replicas_ack(), 1, "a cluster's masters have replicas to acknowledge");
    assert_eq!(cfg.state.cluster_urls(), ["redis://10.0.0.1:6379", "redis://r2:6380"]);
    redis("cluster_nodes = [\"rediss://user@r1:6379\", \"rediss://r2:6379\"]\n").expect("TLS nodes");
    for (keys, needle) in [
        ("cluster_nodes = [\"r1\"]\n", "cluster_nodes[0] is not host:port"),
        ("cluster_nodes = [\"r1:1\", \"redis://r2:1/3\"]\n", "cluster_nodes[1] is not host:port"),
        ("cluster_nodes = [\"redis://u:pw@r1:1\"]\n", "must not contain a password"),
        ("cluster_nodes = [\"r1:1\", \"rediss://r2:1\"]\n", "mixes redis:// and rediss://"),
        ("url = \"redis://r:1\"\ncluster_nodes = [\"r1:1\"]\n", "not used with state.url"),
        (
            "sentinels = [\"s:1\"]\nmaster_name = \"m\"\ncluster_nodes = [\"r1:1\"]\n",
            "not used with state.url or state.sentinels",
        ),
        ("cluster_nodes = [\"r1:1\"]\nkey_prefix = \"{x}\"\n", "key_prefix must not contain"),
    ] {
        let err = redis(keys).expect_err(keys);
        assert!(err.contains(needle), "{keys}: {err}");
        assert!(!err.contains("pw"), "{err}");
    }
}
