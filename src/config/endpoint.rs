//! The `aliyun.endpoint` rule: `https://host[:port][/]`, or `http://` to a loopback host only
//! (the emulator), so that the AccessKey signature and the private key never cross a network
//! in clear text.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Alibaba's CDN API endpoint.
pub(super) const DEFAULT: &str = "https://cdn.aliyuncs.com";

/// The endpoint without a trailing `/`, or why it is refused (with what to do).
pub(super) fn check(raw: &str) -> Result<String, String> {
    let (secure, rest) = if let Some(rest) = raw.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = raw.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "must start with https:// (e.g. \"{DEFAULT}\"); http:// is allowed only for \
             loopback hosts"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err(format!(
            "must be scheme://host[:port] with no path, query or user name (e.g. \
             \"{DEFAULT}\")"
        ));
    }
    let host = host_of(authority)?;
    if !secure && !is_loopback(host) {
        return Err(
            "plain http:// is allowed only for loopback hosts (127.0.0.0/8, ::1, \
                    localhost); use https://"
                .to_string(),
        );
    }
    let scheme = if secure { "https" } else { "http" };
    Ok(format!("{scheme}://{authority}"))
}

/// The host part of `host[:port]` or `[v6][:port]`, checking the port.
fn host_of(authority: &str) -> Result<&str, String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "has an unclosed `[` in its IPv6 address".to_string())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("has text after the IPv6 address")?,
            ),
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("has an invalid IPv6 address `{host}`"));
        }
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host name".to_string());
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("has an invalid port `{port}`; use 1 to 65535"));
    }
    Ok(host)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_is_accepted_and_trailing_slash_dropped() {
        assert_eq!(check("https://cdn.aliyuncs.com/").as_deref(), Ok(DEFAULT));
        assert_eq!(
            check("https://example.com:8443").as_deref(),
            Ok("https://example.com:8443")
        );
    }

    #[test]
    fn http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://[::1]:9000",
            "http://LOCALHOST:1",
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1",
            "http://[::2]",
            "http://128.0.0.1",
        ] {
            let err = check(bad).unwrap_err();
            assert!(err.contains("only for loopback"), "{bad}: {err}");
        }
    }

    #[test]
    fn malformed_endpoints_are_refused() {
        for bad in [
            "cdn.aliyuncs.com",
            "ftp://x",
            "https://",
            "https://h/path",
            "https://h?q",
            "https://u@h",
            "https://h:0",
            "https://h:99999",
            "https://[::1",
            "https://[zz]",
            "https://[::1]x",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
