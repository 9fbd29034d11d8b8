//! Image reference parsing: a table of cases taken from distribution/reference's
//! `normalize_test.go` and `reference_test.go` (as `ParseNormalizedNamed` decides them), and
//! property tests built from the reference grammar.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use portcullis_engine::image_ref::ImageRef;
use proptest::prelude::*;

const SHA256_F: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
const SHA256_DBCC: &str = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
const HEX64: &str = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";

/// What a case expects: the four fields, or an error whose reason contains the given words.
enum Want {
    Ok {
        registry: String,
        image: String,
        tag: String,
        digest: Option<String>,
    },
    Err(&'static str),
}

fn ok(registry: &str, image: impl Into<String>, tag: impl Into<String>) -> Want {
    Want::Ok {
        registry: registry.to_owned(),
        image: image.into(),
        tag: tag.into(),
        digest: None,
    }
}

fn ok_digest(registry: &str, image: &str, tag: &str, digest: impl Into<String>) -> Want {
    Want::Ok {
        registry: registry.to_owned(),
        image: image.to_owned(),
        tag: tag.to_owned(),
        digest: Some(digest.into()),
    }
}

fn check(input: &str, want: &Want) {
    let got = ImageRef::parse(input);
    match (want, got) {
        (
            Want::Ok {
                registry,
                image,
                tag,
                digest,
            },
            Ok(r),
        ) => {
            assert_eq!(r.registry(), registry, "registry of {input:?}");
            assert_eq!(r.image(), image, "image of {input:?}");
            assert_eq!(r.tag(), tag, "tag of {input:?}");
            assert_eq!(r.digest(), digest.as_deref(), "digest of {input:?}");
        }
        (Want::Ok { .. }, Err(e)) => panic!("{input:?} should parse, got {e}"),
        (Want::Err(words), Ok(r)) => {
            panic!("{input:?} should fail ({words}), parsed as {r:?}")
        }
        (Want::Err(words), Err(e)) => {
            let message = e.to_string();
            assert!(message.starts_with("invalid image reference: "), "{input:?}: {message}");
            assert!(
                e.reason.contains(words),
                "{input:?}: reason {:?} should mention {words:?}",
                e.reason
            );
        }
    }
}

#[test]
fn table_of_references_parses_as_parse_normalized_named() {
    let long_tag = "t".repeat(128);
    let too_long_tag = format!("nginx:{}", "t".repeat(129));
    let path_255 = format!("example.com/{}:tag", "a".repeat(255));
    let path_256 = format!("example.com/{}", "a".repeat(256));
    let familiar_247 = "a".repeat(247);
    let familiar_248 = "a".repeat(248);
    let namespaced_too_long = format!("domain/{}:tag", "a".repeat(256));
    let sha384 = format!("sha384:{}", "a".repeat(96));
    let sha512 = format!("sha512:{}", "b".repeat(128));
    let hex64_with_registry = format!("docker.io/{HEX64}");
    let hex64_with_tag = format!("{HEX64}:v1");
    let owned: Vec<(String, Want)> = vec![
        (
            format!("nginx:{long_tag}"),
            ok("docker.io", "library/nginx", long_tag.clone()),
        ),
        (too_long_tag, Want::Err("tag")),
        (path_255, ok("example.com", "a".repeat(255), "tag")),
        (path_256, Want::Err("255")),
        (
            familiar_247.clone(),
            ok("docker.io", format!("library/{familiar_247}"), "latest"),
        ),
        (familiar_248, Want::Err("255")),
        (namespaced_too_long, Want::Err("255")),
        (
            format!("app@{sha384}"),
            ok_digest("docker.io", "library/app", "", sha384.clone()),
        ),
        (
            format!("app@{sha512}"),
            ok_digest("docker.io", "library/app", "", sha512.clone()),
        ),
        (
            hex64_with_registry,
            ok("docker.io", format!("library/{HEX64}"), "latest"),
        ),
        (hex64_with_tag, ok("docker.io", format!("library/{HEX64}"), "v1")),
    ];
    let fixed: Vec<(&str, Want)> = vec![
        // Docker Hub normalisation.
        ("nginx", ok("docker.io", "library/nginx", "latest")),
        ("redis:latest", ok("docker.io", "library/redis", "latest")),
        (
            "docker.io/library/redis:latest",
            ok("docker.io", "library/redis", "latest"),
        ),
        ("dmcgowan/myapp", ok("docker.io", "dmcgowan/myapp", "latest")),
        ("docker.io/foo", ok("docker.io", "library/foo", "latest")),
        ("index.docker.io/debian", ok("docker.io", "library/debian", "latest")),
        (
            "index.docker.io/docker/docker",
            ok("docker.io", "docker/docker", "latest"),
        ),
        (
            "docker.io/library/foo/bar",
            ok("docker.io", "library/foo/bar", "latest"),
        ),
        ("store/foo/bar", ok("docker.io", "store/foo/bar", "latest")),
        ("test_com/foo", ok("docker.io", "test_com/foo", "latest")),
        // No `/`: never a registry, so these are Docker Hub names, the number a tag.
        ("192.168.0.1", ok("docker.io", "library/192.168.0.1", "latest")),
        ("192.168.0.1:80", ok("docker.io", "library/192.168.0.1", "80")),
        ("test.com:5000", ok("docker.io", "library/test.com", "5000")),
        ("localhost:5000", ok("docker.io", "library/localhost", "5000")),
        ("foo_bar.com:8080", ok("docker.io", "library/foo_bar.com", "8080")),
        // localhost, ports, IPs, upper-case registries.
        ("localhost/fooo", ok("localhost", "fooo", "latest")),
        ("localhost/fooo/bar", ok("localhost", "fooo/bar", "latest")),
        ("localhost:5000/app:1.0", ok("localhost:5000", "app", "1.0")),
        ("LOCALDOMAIN/fooo", ok("localdomain", "fooo", "latest")),
        ("Foo/bar", ok("foo", "bar", "latest")),
        ("Example.COM/app", ok("example.com", "app", "latest")),
        (
            "127.0.0.1:8000/private/moonbase",
            ok("127.0.0.1:8000", "private/moonbase", "latest"),
        ),
        (
            "example.com:8000/privatebasee",
            ok("example.com:8000", "privatebasee", "latest"),
        ),
        ("test-com:8080/foo", ok("test-com:8080", "foo", "latest")),
        ("xn--n3h.com:18080/foo", ok("xn--n3h.com:18080", "foo", "latest")),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com",
            ok("b.gcr.io", "test.example.com/my-app", "test.example.com"),
        ),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            ok("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag"),
        ),
        // IPv6.
        ("[2001:db8::1]/repo", ok("[2001:db8::1]", "repo", "latest")),
        ("[::1]:5000/repo", ok("[::1]:5000", "repo", "latest")),
        ("[FC00::1]:5000/docker", ok("[fc00::1]:5000", "docker", "latest")),
        (
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            ok("[fc00:1:2:3:4:5:6:7]:5000", "library/debian", "latest"),
        ),
        // Digests, alone and with a tag.
        (
            "redis@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c",
            ok_digest("docker.io", "library/redis", "", SHA256_DBCC),
        ),
        (
            "test:5000/repo@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ok_digest("test:5000", "repo", "", SHA256_F),
        ),
        (
            "test:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ok_digest("test:5000", "repo", "tag", SHA256_F),
        ),
        (
            "[2001:db8::1]:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ok_digest("[2001:db8::1]:5000", "repo", "tag", SHA256_F),
        ),
        // Path components and tags at the edge of the grammar.
        ("lowercase:Uppercase", ok("docker.io", "library/lowercase", "Uppercase")),
        (
            "docker---rules/docker",
            ok("docker.io", "docker---rules/docker", "latest"),
        ),
        ("dock__er/docker", ok("docker.io", "dock__er/docker", "latest")),
        ("d/docker", ok("docker.io", "d/docker", "latest")),
        ("app:_under", ok("docker.io", "library/app", "_under")),
        (
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            ok(
                "docker.io",
                "library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
                "latest",
            ),
        ),
        (
            "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
            ok(
                "docker.io",
                "library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
                "latest",
            ),
        ),
        // Errors.
        ("", Want::Err("empty")),
        (HEX64, Want::Err("64-byte hexadecimal")),
        (":justtag", Want::Err("repository name is empty")),
        (
            "@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            Want::Err("repository name is empty"),
        ),
        ("Uppercase:tag", Want::Err("must be lowercase")),
        ("docker/Docker", Want::Err("must be lowercase")),
        ("test:5000/Uppercase/lowercase:tag", Want::Err("must be lowercase")),
        ("docker.io/docker/Docker", Want::Err("must be lowercase")),
        (
            "repo@sha256:ffffffffffffffffffffffffffffffffff",
            Want::Err("34 hex characters, not 64"),
        ),
        (
            "repo@sha256:fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            Want::Err("63 hex characters, not 64"),
        ),
        (
            "repo@sha256:fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            Want::Err("65 hex characters, not 64"),
        ),
        (
            "repo@sha384:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            Want::Err("not 96"),
        ),
        (
            "repo@sha256:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            Want::Err("lower-case hex"),
        ),
        (
            "validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            Want::Err("not supported"),
        ),
        ("repo@md5:ffffffffffffffffffffffffffffffff", Want::Err("not supported")),
        ("repo@sha256:abc", Want::Err("algorithm:hex")),
        ("repo@sha256", Want::Err("algorithm:hex")),
        ("repo@", Want::Err("algorithm:hex")),
        ("nginx:latest@", Want::Err("algorithm:hex")),
        ("aa/asdf$$^/aa", Want::Err("path component")),
        ("-docker", Want::Err("path component")),
        ("-docker/docker", Want::Err("path component")),
        ("docker-/docker", Want::Err("path component")),
        // Has a `.`, so the first segment is read as a registry.
        ("dock..er/docker", Want::Err("registry")),
        // Has a `.`, so the first segment is read as a registry.
        ("dock..er/docker", Want::Err("registry")),
        ("____/____", Want::Err("path component")),
        ("a___b/c", Want::Err("path component")),
        ("docker/dock..er", Want::Err("path component")),
        ("docker///docker", Want::Err("empty path component")),
        ("docker/", Want::Err("empty path component")),
        (" nginx", Want::Err("path component")),
        ("nginx\n", Want::Err("path component")),
        ("nginx:", Want::Err("tag")),
        ("nginx:1.0:", Want::Err("tag")),
        ("nginx:-dash", Want::Err("tag")),
        ("nginx:.dot", Want::Err("tag")),
        ("[2001:db8::1]", Want::Err("path component")),
        ("[2001:db8::1]:5000", Want::Err("path component")),
        ("[fe80::1%eth0]:5000/repo", Want::Err("registry")),
        ("[2001:db8:3:4::192.0.2.33]:5000/debian", Want::Err("registry")),
        ("fc00::1:5000/debian", Want::Err("registry")),
        ("https://github.com/docker/docker", Want::Err("registry")),
        ("-docker.io/docker/docker", Want::Err("registry")),
        ("localhost:/app", Want::Err("registry")),
        // distribution returns a name with no domain here; we have no registry to report.
        ("foo_bar.com/x", Want::Err("registry")),
    ];
    let total = owned.len() + fixed.len();
    assert!(total >= 40, "only {total} cases");
    for (input, want) in &owned {
        check(input, want);
    }
    for (input, want) in &fixed {
        check(input, want);
    }
}

#[test]
fn image_path_repository_and_display_render_the_normalised_reference() {
    let both = ImageRef::parse(&format!("busybox:latest@{SHA256_F}")).unwrap();
    assert_eq!(
        both.image_path(),
        format!("docker.io/library/busybox:latest@{SHA256_F}")
    );
    assert_eq!(both.repository(), "docker.io/library/busybox");
    assert_eq!(both.to_string(), both.image_path());

    let digest_only = ImageRef::parse(&format!("gcr.io/proj/app@{SHA256_F}")).unwrap();
    assert_eq!(digest_only.tag(), "");
    assert_eq!(digest_only.image_path(), format!("gcr.io/proj/app@{SHA256_F}"));

    let plain: ImageRef = "nginx".parse().unwrap();
    assert_eq!(plain.image_path(), "docker.io/library/nginx:latest");
    let mut buf = String::from("left over");
    plain.write_image_path(&mut buf);
    assert_eq!(buf, "docker.io/library/nginx:latest");
}

#[test]
fn upper_case_registries_that_change_meaning_when_lower_cased_are_documented_exceptions() {
    // A single upper-case label is a registry only because of its case.
    let r = ImageRef::parse("LOCALDOMAIN/app").unwrap();
    assert_eq!((r.registry(), r.image()), ("localdomain", "app"));
    let again = ImageRef::parse(&r.image_path()).unwrap();
    assert_eq!((again.registry(), again.image()), ("docker.io", "localdomain/app"));

    // distribution compares `docker.io` case-sensitively, so no `library/` here.
    let r = ImageRef::parse("DOCKER.IO/app").unwrap();
    assert_eq!((r.registry(), r.image()), ("docker.io", "app"));
    assert_eq!(ImageRef::parse(&r.image_path()).unwrap().image(), "library/app");
}

#[test]
fn path_length_limit_counts_the_path_only_after_library_is_added() {
    for n in 240..=260 {
        let with_registry = format!("registry.example.com:5000/{}", "a".repeat(n));
        assert_eq!(ImageRef::parse(&with_registry).is_ok(), n <= 255, "{n}");
        let familiar = "a".repeat(n);
        assert_eq!(ImageRef::parse(&familiar).is_ok(), n + 8 <= 255, "{n}");
    }
}

/// A reference generated from the grammar, with the fields it must parse to.
#[derive(Debug, Clone)]
struct Generated {
    input: String,
    registry: String,
    image: String,
    tag: String,
    digest: Option<String>,
}

fn path_component() -> impl Strategy<Value = String> {
    let separator = prop_oneof![
        Just(".".to_owned()),
        Just("_".to_owned()),
        Just("__".to_owned()),
        "-{1,3}"
    ];
    (
        "[a-z0-9]{1,6}",
        proptest::collection::vec((separator, "[a-z0-9]{1,6}"), 0..3),
    )
        .prop_map(|(first, rest)| {
            let mut s = first;
            for (sep, alnum) in rest {
                s.push_str(&sep);
                s.push_str(&alnum);
            }
            s
        })
}

/// Registries written so that lower-casing keeps them registries (see the documented exceptions).
fn registry() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?";
    let port = proptest::option::of("[0-9]{1,5}");
    let domain = (proptest::collection::vec(label, 1..4), port.clone()).prop_map(|(labels, port)| {
        let mut s = labels.join(".");
        if let Some(port) = port {
            s.push(':');
            s.push_str(&port);
        }
        s
    });
    let ipv6 = ("[a-fA-F0-9:]{1,20}", port).prop_map(|(address, port)| match port {
        Some(port) => format!("[{address}]:{port}"),
        None => format!("[{address}]"),
    });
    prop_oneof![
        4 => domain,
        2 => ipv6,
        1 => Just("localhost".to_owned()),
        1 => Just("LocalHost".to_owned()),
        1 => Just("docker.io".to_owned()),
        1 => Just("index.docker.io".to_owned()),
    ]
    .prop_filter("a registry whose meaning survives lower-casing", |r| {
        let lower = r.to_ascii_lowercase();
        let still_registry = lower.contains(['.', ':']) || lower == "localhost";
        let hub_alias = (lower == "docker.io" || lower == "index.docker.io") && lower != *r;
        still_registry && !hub_alias
    })
}

fn digest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-f0-9]{64}".prop_map(|h| format!("sha256:{h}")),
        "[a-f0-9]{96}".prop_map(|h| format!("sha384:{h}")),
        "[a-f0-9]{128}".prop_map(|h| format!("sha512:{h}")),
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        proptest::option::of(registry()),
        proptest::collection::vec(path_component(), 1..4),
        proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"),
        proptest::option::of(digest()),
    )
        .prop_filter(
            "without a registry the first segment must not look like one",
            |(registry, path, _, _)| {
                registry.is_some() || path.len() == 1 || !(path[0].contains('.') || path[0] == "localhost")
            },
        )
        .prop_map(|(registry, path, tag, digest)| {
            let path = path.join("/");
            let mut input = String::new();
            if let Some(registry) = &registry {
                input.push_str(registry);
                input.push('/');
            }
            input.push_str(&path);
            if let Some(tag) = &tag {
                input.push(':');
                input.push_str(tag);
            }
            if let Some(digest) = &digest {
                input.push('@');
                input.push_str(digest);
            }
            let normalised = match registry.as_deref() {
                None | Some("index.docker.io") => "docker.io".to_owned(),
                Some(r) => r.to_ascii_lowercase(),
            };
            let hub = registry.is_none() || normalised == "docker.io";
            let image = if hub && !path.contains('/') {
                format!("library/{path}")
            } else {
                path
            };
            let tag = match (tag, &digest) {
                (Some(tag), _) => tag,
                (None, None) => "latest".to_owned(),
                (None, Some(_)) => String::new(),
            };
            Generated {
                input,
                registry: normalised,
                image,
                tag,
                digest,
            }
        })
}

/// Invariants of any successful parse of `input`.
fn check_invariants(input: &str, r: &ImageRef) {
    let path = r.image_path();
    assert!(path.starts_with(&format!("{}/", r.registry())), "{input:?} → {path}");
    assert!(!r.registry().is_empty() && !r.image().is_empty());
    assert_eq!(r.registry(), r.registry().to_ascii_lowercase());
    if r.digest().is_none() {
        assert!(!r.tag().is_empty(), "{input:?}: no digest, so a tag (at least latest)");
    }
    let again = ImageRef::parse(&path).unwrap_or_else(|e| panic!("{input:?} → {path}: {e}"));
    if again != *r {
        // Only the documented exceptions: an upper-case registry that lower-casing changes.
        let first = input.split_once('/').map(|(f, _)| f).unwrap_or_default();
        let lower = first.to_ascii_lowercase();
        assert!(
            first != lower
                && ((!lower.contains(['.', ':']) && lower != "localhost")
                    || lower == "docker.io"
                    || lower == "index.docker.io"),
            "{input:?} → {path} → {again:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
        if let Ok(r) = ImageRef::parse(&s) {
            check_invariants(&s, &r);
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let s = String::from_utf8_lossy(&bytes);
        if let Ok(r) = ImageRef::parse(&s) {
            check_invariants(&s, &r);
        }
    }

    #[test]
    fn parse_never_panics_on_reference_like_strings(s in "[a-zA-Z0-9./:@_\\[\\]é-]{0,300}") {
        if let Ok(r) = ImageRef::parse(&s) {
            check_invariants(&s, &r);
        }
    }

    #[test]
    fn generated_references_parse_to_their_fields_and_round_trip(g in generated()) {
        let r = ImageRef::parse(&g.input)
            .unwrap_or_else(|e| panic!("{:?} should parse: {e}", g.input));
        prop_assert_eq!(r.registry(), g.registry.as_str());
        prop_assert_eq!(r.image(), g.image.as_str());
        prop_assert_eq!(r.tag(), g.tag.as_str());
        prop_assert_eq!(r.digest(), g.digest.as_deref());
        let again = ImageRef::parse(&r.image_path());
        prop_assert_eq!(again.as_ref(), Ok(&r));
    }

    #[test]
    fn image_path_starts_with_the_registry(g in generated()) {
        let r = ImageRef::parse(&g.input).unwrap();
        let path = r.image_path();
        let prefix = format!("{}/", r.registry());
        prop_assert!(path.starts_with(&prefix), "{} does not start with {}", path, prefix);
        prop_assert_eq!(path.strip_prefix(&prefix).and_then(|rest| rest.strip_prefix(r.image())).is_some(), true);
    }
}
