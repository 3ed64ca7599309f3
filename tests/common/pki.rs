//! A test PKI made with the `openssl` command: a CA and a leaf for `localhost`/127.0.0.1.

use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a leaf for `localhost`/127.0.0.1 signed by it, named `{prefix}ca.crt`,
/// `{prefix}leaf.crt`, `{prefix}leaf.key` (rustls refuses a CA used as its own leaf).
pub fn make_pki(dir: &Path, prefix: &str, cn: &str) {
    let ca_key = format!("{prefix}ca.key");
    let ca_crt = format!("{prefix}ca.crt");
    let leaf_key = format!("{prefix}leaf.key");
    let leaf_csr = format!("{prefix}leaf.csr");
    let leaf_crt = format!("{prefix}leaf.crt");
    let subj_ca = format!("/CN={cn} CA");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca_crt,
            "-days",
            "2",
            "-subj",
            &subj_ca,
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &leaf_key,
            "-out",
            &leaf_csr,
            "-subj",
            "/CN=localhost",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &leaf_csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &leaf_crt,
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
        dir,
    );
}
