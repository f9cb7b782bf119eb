//! Every third-party image the stack runs or builds on is pinned by digest
//! (`name:tag@sha256:…`): a tag can be re-pushed, a digest cannot. An image whose digest could
//! not be verified says so, in the comment right above it, with the words `DIGEST MISSING`.
//! MongoDB runs a supported release line (6.0 reached end of life in July 2025).

use super::read;

/// The images built here, not pulled: nothing to pin.
const OURS: &[&str] = &["tickstream:local"];

/// Whether `image` ends in `@sha256:` and 64 lowercase hex digits.
fn is_pinned(image: &str) -> bool {
    image.split_once("@sha256:").is_some_and(|(name, digest)| {
        !name.is_empty()
            && digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The images a compose file names (`image:` values; YAML anchors stripped, aliases skipped),
/// each with the comment lines directly above its `image:` line.
fn compose_images(compose: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = compose.lines().collect();
    let mut images = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("image:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('*') {
            continue;
        }
        let image = value
            .strip_prefix('&')
            .and_then(|anchored| anchored.split_once(' '))
            .map_or(value, |(_, image)| image.trim());
        let comment: Vec<&str> = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        images.push((image.to_owned(), comment.join("\n")));
    }
    images
}

/// The base images of a Dockerfile's `FROM` lines.
fn dockerfile_images(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| line.trim().strip_prefix("FROM "))
        .filter_map(|rest| rest.split_whitespace().find(|w| !w.starts_with("--")))
        .map(str::to_owned)
        .collect()
}

/// What is neither pinned nor ours nor marked `DIGEST MISSING`.
fn unpinned(compose: &str, dockerfile: &str) -> Vec<String> {
    let compose = compose_images(compose)
        .into_iter()
        .filter(|(image, comment)| {
            !OURS.contains(&image.as_str())
                && !is_pinned(image)
                && !comment.contains("DIGEST MISSING")
        })
        .map(|(image, _)| format!("docker-compose.yml: {image}"));
    let dockerfile = dockerfile_images(dockerfile)
        .into_iter()
        .filter(|image| !is_pinned(image))
        .map(|image| format!("Dockerfile: {image}"));
    compose.chain(dockerfile).collect()
}

#[test]
fn third_party_images_are_pinned_by_digest() {
    let compose = read("docker-compose.yml");
    let dockerfile = read("Dockerfile");
    let problems = unpinned(&compose, &dockerfile);
    assert!(
        problems.is_empty(),
        "images pinned by tag only (add @sha256:…, or say DIGEST MISSING above it):\n  {}",
        problems.join("\n  ")
    );
    let images = compose_images(&compose);
    let pinned = images.iter().filter(|(image, _)| is_pinned(image)).count();
    assert!(pinned >= 4, "only {pinned} pinned images in {images:?}");
    assert_eq!(
        dockerfile_images(&dockerfile).len(),
        2,
        "build and runtime stages"
    );
    for (image, _) in &images {
        if let Some(tag) = image.strip_prefix("mongo:") {
            let major: u32 = tag
                .split(['.', '@'])
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("unreadable mongo tag {tag}"));
            assert!(major >= 7, "{image}: MongoDB {major} is past end of life");
        }
    }
}

#[test]
fn the_pin_check_catches_a_tag_only_image() {
    let digest = "a".repeat(64);
    let compose = format!(
        "services:\n  a:\n    image: &x kafka:4@sha256:{digest}\n  b:\n    image: *x\n  c:\n    \
         image: grafana/grafana:12\n  d:\n    # DIGEST MISSING: not found\n    image: kafdrop:4\n  \
         e:\n    image: tickstream:local\n  f:\n    image: prom:3@sha256:{}\n",
        "A".repeat(64)
    );
    let dockerfile = format!("FROM rust:1@sha256:{digest} AS build\nFROM debian:12 AS runtime\n");
    assert_eq!(
        unpinned(&compose, &dockerfile),
        [
            "docker-compose.yml: grafana/grafana:12",
            &format!("docker-compose.yml: prom:3@sha256:{}", "A".repeat(64)),
            "Dockerfile: debian:12",
        ]
    );
}
