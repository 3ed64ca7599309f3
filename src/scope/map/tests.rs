use http::Method;
use proptest::prelude::*;

use super::*;
use crate::scope::layout::Layout;

fn layouts() -> Layouts {
    Layouts::new(vec![
        Layout::new(Ecosystem::Composer, "/", None).unwrap(),
        Layout::new(Ecosystem::Npm, "/npm/", None).unwrap(),
        Layout::new(Ecosystem::Pypi, "/pypi/", None).unwrap(),
        Layout::new(Ecosystem::Cargo, "/cargo/", None).unwrap(),
        Layout::new(Ecosystem::Maven, "/maven/", None).unwrap(),
    ])
    .unwrap()
}

fn get(path: &str) -> Target {
    classify(&layouts(), &Method::GET, path)
}

fn pkg(eco: Ecosystem, name: &str) -> Target {
    Target::Package(eco, vec![name.to_string()])
}

#[test]
fn composer_paths() {
    use Ecosystem::Composer as C;
    assert_eq!(
        get("/packages.json"),
        Target::Listing(C, Listing::ComposerRoot)
    );
    assert_eq!(get("/p2/acme/widget.json"), pkg(C, "acme/widget"));
    assert_eq!(get("/p2/acme/widget~dev.json"), pkg(C, "acme/widget"));
    assert_eq!(get("/p2/ACME/Widget.json"), pkg(C, "acme/widget"));
    assert_eq!(get("/p/acme/widget$abc.json"), pkg(C, "acme/widget"));
    assert_eq!(
        get("/include/all$0123.json"),
        Target::Listing(C, Listing::ComposerInclude)
    );
    assert_eq!(
        get("/p/provider-2024$ab.json"),
        Target::Listing(C, Listing::ComposerInclude)
    );
    assert_eq!(
        get("/dist/acme/widget/acme-widget-1.0.zip"),
        pkg(C, "acme/widget")
    );
    assert_eq!(get("/index.html"), Target::Unknown);
    assert_eq!(get("/p2/acme.json"), Target::Unknown);
    assert_eq!(
        classify(&layouts(), &Method::PUT, "/packages.json"),
        Target::Unknown
    );
}

#[test]
fn npm_paths_and_scope_encodings() {
    use Ecosystem::Npm as N;
    for p in [
        "/npm/@acme%2Fwidget",
        "/npm/@acme%2fwidget",
        "/npm/%40acme%2Fwidget",
        "/npm/%40acme/widget",
        "/npm/@acme/widget",
        "/npm/@acme/widget/1.0.0",
        "/npm/@acme/widget/-/widget-1.0.0.tgz",
        "/npm/@acme%2Fwidget/-/widget-1.0.0.tgz",
        "/npm/-/package/@acme%2Fwidget/dist-tags",
    ] {
        assert_eq!(get(p), pkg(N, "@acme/widget"), "{p}");
    }
    assert_eq!(get("/npm/left-pad"), pkg(N, "left-pad"));
    assert_eq!(
        get("/npm/left-pad/-/left-pad-1.3.0.tgz"),
        pkg(N, "left-pad")
    );
    assert_eq!(
        get("/npm/@acme/widget/-/@acme/widget-1.0.0.tgz"),
        pkg(N, "@acme/widget")
    );
    // A tarball of another package under this one's path: refused.
    assert_eq!(get("/npm/@acme/widget/-/x-1.0.0.tgz"), Target::Unknown);
    assert_eq!(
        get("/npm/@acme/widget/-/@globex/widget-1.0.0.tgz"),
        Target::Unknown
    );
    assert_eq!(get("/npm/left-pad/-/left-pad.tgz"), Target::Unknown);
    assert_eq!(
        get("/npm/-/v1/search"),
        Target::Listing(N, Listing::NpmSearch)
    );
    assert_eq!(
        classify(&layouts(), &Method::PUT, "/npm/@acme%2Fwidget"),
        pkg(N, "@acme/widget")
    );
    for p in [
        "/npm/",
        "/npm/-/whoami",
        "/npm/@acme",
        "/npm/@acme%2Fa%2Fb",
        "/npm/a%20b",
        "/npm/a/b/c",
    ] {
        assert_eq!(get(p), Target::Unknown, "{p}");
    }
}

#[test]
fn pypi_paths() {
    use Ecosystem::Pypi as P;
    assert_eq!(
        get("/pypi/simple/"),
        Target::Listing(P, Listing::PypiSimple)
    );
    assert_eq!(get("/pypi/simple/Acme_Widget/"), pkg(P, "acme-widget"));
    assert_eq!(get("/pypi/simple/acme.widget/"), pkg(P, "acme-widget"));
    assert_eq!(
        get("/pypi/packages/acme_widget-1.0-py3-none-any.whl"),
        pkg(P, "acme-widget")
    );
    assert_eq!(
        get("/pypi/packages/ab/cd/acme_widget-1.0.tar.gz"),
        pkg(P, "acme-widget")
    );
    assert_eq!(
        get("/pypi/packages/acme-2fa-1.0.tar.gz"),
        Target::Package(P, vec!["acme".into(), "acme-2fa".into()])
    );
    assert_eq!(
        get("/pypi/packages/acme_widget-1.0-py3-none-any.whl.metadata"),
        pkg(P, "acme-widget")
    );
    assert_eq!(
        classify(&layouts(), &Method::POST, "/pypi/"),
        Target::Upload(P, Upload::Twine)
    );
    assert_eq!(get("/pypi/"), Target::Unknown);
    assert_eq!(get("/pypi/packages/README"), Target::Unknown);
}

#[test]
fn cargo_paths() {
    use Ecosystem::Cargo as R;
    assert_eq!(get("/cargo/config.json"), Target::Neutral);
    assert_eq!(get("/cargo/ac/me/acme_widget"), pkg(R, "acme-widget"));
    assert_eq!(get("/cargo/3/a/abc"), pkg(R, "abc"));
    assert_eq!(get("/cargo/1/a"), pkg(R, "a"));
    assert_eq!(
        get("/cargo/gl/ob/acme_widget"),
        Target::Unknown,
        "directories must match"
    );
    assert_eq!(
        get("/cargo/crates/acme_widget/0.1.0/download"),
        pkg(R, "acme-widget")
    );
    assert_eq!(
        get("/cargo/api/v1/crates/acme_widget/0.1.0/download"),
        pkg(R, "acme-widget")
    );
    assert_eq!(
        get("/crates/acme_widget/acme_widget-0.1.0.crate"),
        pkg(R, "acme-widget")
    );
    assert_eq!(
        classify(&layouts(), &Method::PUT, "/cargo/api/v1/crates/new"),
        Target::Upload(R, Upload::CargoPublish)
    );
}

#[test]
fn maven_paths() {
    use Ecosystem::Maven as M;
    assert_eq!(
        get("/maven/com/acme/widget/1.0/widget-1.0.jar"),
        pkg(M, "com.acme:widget")
    );
    assert_eq!(
        get("/maven/com/acme/widget/1.0/widget-1.0.pom.sha1"),
        pkg(M, "com.acme:widget")
    );
    assert_eq!(
        get("/maven/com/acme/widget/maven-metadata.xml"),
        pkg(M, "com.acme:widget")
    );
    assert_eq!(
        get("/maven/com/acme/widget/1.0-SNAPSHOT/maven-metadata.xml.sha1"),
        pkg(M, "com.acme:widget")
    );
    assert_eq!(
        get("/maven/com/acme/widget/1.0/other-1.0.jar"),
        Target::Unknown
    );
    assert_eq!(get("/maven/com/acme/"), Target::Unknown);
    assert_eq!(get("/maven/widget/1.0/widget-1.0.jar"), Target::Unknown);
}

#[test]
fn dist_patterns_are_configurable() {
    let l = Layouts::new(vec![Layout::new(
        Ecosystem::Composer,
        "/composer/",
        Some(&["/archives/{vendor}/{package}-{version}.zip".to_string()]),
    )
    .unwrap()])
    .unwrap();
    assert_eq!(
        classify(&l, &Method::GET, "/archives/acme/widget-1.0.zip"),
        pkg(Ecosystem::Composer, "acme/widget")
    );
    assert_eq!(
        classify(&l, &Method::GET, "/composer/dist/acme/widget/x.zip"),
        Target::Unknown
    );
    assert!(Layout::new(Ecosystem::Composer, "/", Some(&["dist/{nope}".to_string()])).is_err());
    assert!(Layout::new(
        Ecosystem::Composer,
        "/",
        Some(&["dist/{version}".to_string()])
    )
    .is_err());
    assert!(Layouts::new(vec![
        Layout::new(Ecosystem::Npm, "/x", None).unwrap(),
        Layout::new(Ecosystem::Pypi, "/x/", None).unwrap(),
    ])
    .is_err());
}

proptest! {
    /// Whatever the path, mapping never panics, and a package it names is in normal form.
    #[test]
    fn any_path_maps_to_a_normal_name(path in "/[a-zA-Z0-9@%._~/$-]{0,60}", post in any::<bool>()) {
        let m = if post { Method::POST } else { Method::GET };
        if let Target::Package(eco, names) = classify(&layouts(), &m, &path) {
            for n in names {
                prop_assert_eq!(normalize(eco, &n), Some(n.clone()));
            }
        }
    }

    /// npm: however the scope is encoded, the same package comes out.
    #[test]
    fn npm_scope_encodings_agree(scope in "[a-z0-9][a-z0-9._-]{0,10}", name in "[a-z0-9][a-z0-9._-]{0,10}",
                                 at in prop::bool::ANY, slash in 0..3usize) {
        let at = if at { "@" } else { "%40" };
        let slash = ["/", "%2F", "%2f"][slash];
        let path = format!("/npm/{at}{scope}{slash}{name}");
        prop_assert_eq!(get(&path), pkg(Ecosystem::Npm, &format!("@{scope}/{name}")));
    }
}

fn art(path: &str) -> Option<(Ecosystem, String, Option<String>)> {
    artifact(&layouts(), &Method::GET, path).map(|a| (a.ecosystem, a.package, a.version))
}

fn a(
    eco: Ecosystem,
    name: &str,
    version: Option<&str>,
) -> Option<(Ecosystem, String, Option<String>)> {
    Some((eco, name.to_string(), version.map(str::to_string)))
}

#[test]
fn composer_artifacts() {
    use Ecosystem::Composer as C;
    assert_eq!(art("/p2/ACME/Widget.json"), a(C, "acme/widget", None));
    assert_eq!(art("/p2/acme/widget~dev.json"), a(C, "acme/widget", None));
    assert_eq!(art("/p/acme/widget$ab.json"), a(C, "acme/widget", None));
    // The default dist pattern has no {version}: the package alone.
    assert_eq!(
        art("/dist/acme/widget/acme-widget-2.3.1.zip"),
        a(C, "acme/widget", None)
    );
    let l = Layouts::new(vec![Layout::new(
        C,
        "/",
        Some(&["dist/{vendor}/{package}/{version}/{file}".to_string()]),
    )
    .unwrap()])
    .unwrap();
    let got = artifact(&l, &Method::GET, "/dist/acme/widget/2.3.1/x.zip").unwrap();
    assert_eq!(
        (got.package.as_str(), got.version.as_deref()),
        ("acme/widget", Some("2.3.1"))
    );
    assert_eq!(art("/packages.json"), None, "a listing");
    assert_eq!(art("/include/all$0123.json"), None, "a listing");
    assert_eq!(art("/index.html"), None);
}

#[test]
fn npm_artifacts() {
    use Ecosystem::Npm as N;
    assert_eq!(art("/npm/@acme%2Fwidget"), a(N, "@acme/widget", None));
    assert_eq!(
        art("/npm/@acme/widget/1.2.0"),
        a(N, "@acme/widget", Some("1.2.0"))
    );
    assert_eq!(
        art("/npm/@acme/widget/-/widget-1.2.0.tgz"),
        a(N, "@acme/widget", Some("1.2.0"))
    );
    assert_eq!(
        art("/npm/@acme/widget/-/@acme/widget-1.2.0-beta.1.tgz"),
        a(N, "@acme/widget", Some("1.2.0-beta.1"))
    );
    assert_eq!(
        art("/npm/left-pad/-/left-pad-1.3.0.tgz"),
        a(N, "left-pad", Some("1.3.0"))
    );
    assert_eq!(
        art("/npm/-/package/left-pad/dist-tags"),
        a(N, "left-pad", None)
    );
    assert_eq!(art("/npm/-/v1/search"), None, "a listing");
    // A publish is an upload: no artifact (the path key).
    assert_eq!(
        artifact(&layouts(), &Method::PUT, "/npm/@acme%2Fwidget"),
        None
    );
    assert_eq!(art("/npm/left-pad/-/x-1.0.0.tgz"), None);
}

#[test]
fn pypi_artifacts() {
    use Ecosystem::Pypi as P;
    assert_eq!(art("/pypi/simple/Acme_Widget/"), a(P, "acme-widget", None));
    assert_eq!(
        art("/pypi/packages/acme_widget-2.3.1-py3-none-any.whl"),
        a(P, "acme-widget", Some("2.3.1"))
    );
    assert_eq!(
        art("/pypi/packages/acme_widget-2.3.1-1-py3-none-any.whl.metadata"),
        a(P, "acme-widget", Some("2.3.1"))
    );
    assert_eq!(
        art("/pypi/packages/ab/cd/Acme.Widget-2.3.1.tar.gz"),
        a(P, "acme-widget", Some("2.3.1"))
    );
    assert_eq!(
        art("/pypi/packages/acme_widget-2.3.1.tar.gz.asc"),
        a(P, "acme-widget", Some("2.3.1"))
    );
    assert_eq!(
        art("/pypi/packages/acme-0.1.egg"),
        a(P, "acme", Some("0.1"))
    );
    // Two readings (`acme` 2fa-1.0, `acme-2fa` 1.0): no artifact, the path key.
    assert_eq!(art("/pypi/packages/acme-2fa-1.0.tar.gz"), None);
    assert_eq!(art("/pypi/simple/"), None, "a listing");
    assert_eq!(
        artifact(&layouts(), &Method::POST, "/pypi/"),
        None,
        "an upload"
    );
}

#[test]
fn cargo_artifacts() {
    use Ecosystem::Cargo as R;
    assert_eq!(
        art("/cargo/api/v1/crates/Acme_Widget/0.1.0/download"),
        a(R, "acme-widget", Some("0.1.0"))
    );
    assert_eq!(
        art("/cargo/crates/acme_widget/0.1.0/download"),
        a(R, "acme-widget", Some("0.1.0"))
    );
    assert_eq!(
        art("/crates/acme_widget/acme_widget-0.1.0.crate"),
        a(R, "acme-widget", Some("0.1.0"))
    );
    assert_eq!(art("/cargo/ac/me/acme_widget"), a(R, "acme-widget", None));
    assert_eq!(art("/cargo/config.json"), None, "names no package");
    assert_eq!(
        artifact(&layouts(), &Method::PUT, "/cargo/api/v1/crates/new"),
        None
    );
}

#[test]
fn maven_artifacts() {
    use Ecosystem::Maven as M;
    assert_eq!(
        art("/maven/com/acme/widget/2.3.1/widget-2.3.1.jar"),
        a(M, "com.acme:widget", Some("2.3.1"))
    );
    assert_eq!(
        art("/maven/com/acme/widget/2.3.1/widget-2.3.1-sources.jar.sha1"),
        a(M, "com.acme:widget", Some("2.3.1"))
    );
    assert_eq!(
        art("/maven/com/acme/widget/maven-metadata.xml"),
        a(M, "com.acme:widget", None)
    );
    assert_eq!(
        art("/maven/com/acme/widget/1.0-SNAPSHOT/maven-metadata.xml"),
        a(M, "com.acme:widget", Some("1.0-SNAPSHOT"))
    );
    assert_eq!(art("/maven/com/acme/widget/1.0/other-1.0.jar"), None);
}

#[test]
fn without_layouts_nothing_is_an_artifact() {
    let none = Layouts::default();
    assert_eq!(artifact(&none, &Method::GET, "/p2/acme/widget.json"), None);
}

proptest! {
    /// An artifact is what `classify` reads the path as, with one name.
    #[test]
    fn artifacts_agree_with_classify(path in "/[a-zA-Z0-9@%._~/$-]{0,60}") {
        let l = layouts();
        if let Some(got) = artifact(&l, &Method::GET, &path) {
            prop_assert_eq!(
                classify(&l, &Method::GET, &path),
                Target::Package(got.ecosystem, vec![got.package.clone()])
            );
            prop_assert!(got.version.as_deref().is_none_or(|v| !v.is_empty() && !v.contains('/')));
        }
    }
}
