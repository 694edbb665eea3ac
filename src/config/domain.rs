//! The managed-domain rule: lowercase ASCII host names, a trailing dot dropped, and
//! Alibaba's wildcard CDN domain written `.example.com` (never `*.example.com`).

/// The longest host name DNS allows.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// Normalises a managed CDN domain, or says why it is refused and what to write instead.
pub(crate) fn normalize_domain(raw: &str) -> Result<String, String> {
    if !raw.is_ascii() {
        return Err(
            "has non-ASCII characters; write internationalised names in their \
                    punycode form (xn--…)"
                .to_string(),
        );
    }
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some(rest) = name.strip_prefix("*.") {
        return Err(format!(
            "`*.{rest}` is a certificate name, not a CDN domain; Alibaba names the wildcard \
             CDN domain `.{rest}`: write \".{rest}\""
        ));
    }
    let (wildcard, host) = match name.strip_prefix('.') {
        Some(host) => (true, host),
        None => (false, name),
    };
    check_host(host)?;
    Ok(if wildcard {
        format!(".{host}")
    } else {
        host.to_string()
    })
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("is empty; write a host name such as \"www.example.com\"".to_string());
    }
    if host.len() > MAX_NAME {
        return Err(format!("is longer than {MAX_NAME} characters"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least two labels (e.g. \"example.com\")".to_string());
    }
    for label in &labels {
        check_label(label)?;
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("looks like an IP address; CDN domains are host names".to_string());
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(
            "has an empty label (two dots in a row, or a dot at the start of a \
                    `*`-less wildcard); write e.g. \"www.example.com\" or \".example.com\""
                .to_string(),
        );
    }
    if label.len() > MAX_LABEL {
        return Err(format!("has a label longer than {MAX_LABEL} characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "has the character {c:?}; host names use only letters, digits, `-` and `.`"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "has the label `{label}`, which starts or ends with `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_trailing_dot() {
        assert_eq!(
            normalize_domain("WWW.Example.COM.").as_deref(),
            Ok("www.example.com")
        );
        assert_eq!(
            normalize_domain(".Example.com").as_deref(),
            Ok(".example.com")
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").as_deref(),
            Ok("xn--bcher-kva.example")
        );
    }

    #[test]
    fn star_wildcard_is_refused_with_a_hint() {
        let err = normalize_domain("*.example.com").unwrap_err();
        assert!(err.contains("write \".example.com\""), "{err}");
    }

    #[test]
    fn bad_names_are_refused() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        for bad in [
            "",
            ".",
            "com",
            ".com",
            "a..b.com",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b.com",
            "bücher.de",
            "10.0.0.1",
            "..example.com",
            &long_label,
            &long_name,
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?}");
        }
    }
}
