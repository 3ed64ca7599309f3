use proptest::prelude::*;

use super::*;

fn pats(p: &[&str]) -> PackagePatterns {
    PackagePatterns::parse(p).unwrap()
}

#[test]
fn normal_forms() {
    use Ecosystem::*;
    assert_eq!(normalize(Pypi, "Acme_Widget").unwrap(), "acme-widget");
    assert_eq!(normalize(Pypi, "acme.widget").unwrap(), "acme-widget");
    assert_eq!(normalize(Pypi, "ACME--_.widget").unwrap(), "acme-widget");
    assert_eq!(normalize(Cargo, "Acme_Widget").unwrap(), "acme-widget");
    assert_eq!(normalize(Composer, "Acme/Widget").unwrap(), "acme/widget");
    assert_eq!(normalize(Npm, "@acme/Widget").unwrap(), "@acme/Widget");
    assert_eq!(
        normalize(Maven, "com.acme:widget").unwrap(),
        "com.acme:widget"
    );
    for (eco, bad) in [
        (Composer, "acme"),
        (Composer, "acme/"),
        (Composer, "a/b/c"),
        (Npm, "@acme"),
        (Npm, ".hidden"),
        (Npm, "@a/b/c"),
        (Pypi, "a/b"),
        (Pypi, "a b"),
        (Cargo, "a%2f"),
        (Maven, "com.acme"),
        (Maven, "com..acme:w"),
        (Pypi, ""),
    ] {
        assert_eq!(normalize(eco, bad), None, "{eco} {bad}");
    }
}

#[test]
fn pattern_shapes_pick_their_ecosystems() {
    use Ecosystem::*;
    let p = pats(&["acme/*", "@acme/*", "acme_*", "com.acme:*", "left-pad"]);
    assert!(p.allows(Composer, "acme/widget"));
    assert!(p.allows(Composer, "ACME/Widget"));
    assert!(!p.allows(Composer, "globex/gadget"));
    assert!(p.allows(Npm, "@acme/widget"));
    assert!(!p.allows(Npm, "@globex/x"));
    assert!(
        !p.allows(Npm, "@ACME/widget"),
        "npm names are case-sensitive"
    );
    assert!(p.allows(Npm, "left-pad"));
    assert!(p.allows(Npm, "acme_x"));
    assert!(p.allows(Pypi, "acme-widget") && p.allows(Pypi, "Acme.Widget"));
    assert!(p.allows(Cargo, "acme_widget") && p.allows(Cargo, "acme-widget"));
    assert!(!p.allows(Cargo, "globex_gadget"));
    assert!(p.allows(Maven, "com.acme:widget"));
    assert!(!p.allows(Maven, "com.acme.sub:widget"));
    assert!(!p.allows(Maven, "com.globex:widget"));
    // A Composer pattern says nothing of PyPI, a Maven one nothing of npm.
    assert!(!pats(&["acme/*"]).allows(Pypi, "acme"));
    assert!(!pats(&["com.acme:*"]).allows(Npm, "com.acme"));
    assert!(PackagePatterns::default().allows(Pypi, "anything"));
    for bad in ["", "a b", "acme/<x>", "a%2f", "@acme", "::"] {
        assert!(PackagePatterns::parse(&[bad]).is_err(), "{bad:?}");
    }
    let too_many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("p{i}")).collect();
    assert!(PackagePatterns::parse(&too_many).is_err());
    assert_eq!(pats(&["a/*", "a/*", "b-*"]).to_string(), "a/*,b-*");
    assert_eq!(
        PackagePatterns::parse_stored("a/*,b-*").unwrap(),
        pats(&["a/*", "b-*"])
    );
}

#[test]
fn covers_is_containment() {
    let p = pats(&["acme/*"]);
    assert!(p.covers(Ecosystem::Composer, "acme/*"));
    assert!(p.covers(Ecosystem::Composer, "acme/w*"));
    assert!(!p.covers(Ecosystem::Composer, "*"));
    assert!(!p.covers(Ecosystem::Composer, "acm*"));
}

fn pypi_spelling() -> impl Strategy<Value = String> {
    // One project name, spelt with any case and any run of separators between its words.
    (
        prop::collection::vec("[a-z0-9]{1,6}", 1..4),
        prop::collection::vec("[-_.]{1,3}", 3),
        any::<u64>(),
    )
        .prop_map(|(words, seps, case)| {
            let mut s = String::new();
            for (i, w) in words.iter().enumerate() {
                if i > 0 {
                    s.push_str(&seps[i - 1]);
                }
                s.push_str(w);
            }
            s.chars()
                .enumerate()
                .map(|(i, c)| {
                    if case >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
}

proptest! {
    /// Every spelling of a PyPI name is allowed exactly when its PEP 503 form is.
    #[test]
    fn pypi_spellings_cannot_sneak_past(name in pypi_spelling()) {
        let normal = pep503(&name);
        let exact = pats(&[&normal]);
        prop_assert!(exact.allows(Ecosystem::Pypi, &name));
        let other = pats(&["zzz-*"]);
        prop_assert_eq!(other.allows(Ecosystem::Pypi, &name), normal.starts_with("zzz-"));
        // And through the other ecosystems' shapes of the same pattern.
        prop_assert_eq!(normalize(Ecosystem::Pypi, &name), Some(normal));
    }

    /// The glob agrees with a regex built from the same pattern.
    #[test]
    fn glob_agrees_with_regex(p in "[ab*]{0,8}", t in "[ab]{0,10}") {
        let re = regex::Regex::new(&format!("^{}$", regex::escape(&p).replace("\\*", ".*"))).unwrap();
        prop_assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), re.is_match(&t));
    }

    /// Cargo names: case and - / _ never matter, anything else does.
    #[test]
    fn cargo_names_fold_case_and_dashes(name in "[a-zA-Z][a-zA-Z0-9_-]{0,20}") {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        prop_assert!(pats(&[&folded]).allows(Ecosystem::Cargo, &name));
        let longer = format!("{folded}x");
        prop_assert!(!pats(&[&longer]).allows(Ecosystem::Cargo, &name));
    }
}
