//! Name rules shared by the API types: DNS-1123 labels (namespaces, NAD names in
//! the comma form of the networks annotation, provider parts) and interface names
//! (CNI spec: at most 15 bytes, not `.`/`..`, no `/`, `:` or whitespace).
//! Pure checks returning a reason; callers wrap it with the object it belongs to.

/// Longest DNS-1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Checks a DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn check_dns1123_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be at most {DNS1123_LABEL_MAX} characters (has {})",
            value.len()
        ));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !value.chars().all(|c| alnum(c) || c == '-') {
        return Err(
            "must consist of lower case alphanumeric characters or '-' (DNS-1123 label)".into(),
        );
    }
    if !value.starts_with(alnum) || !value.ends_with(alnum) {
        return Err("must start and end with a lower case alphanumeric character".into());
    }
    Ok(())
}

/// Checks an interface name as the CNI spec and Multus do.
pub fn check_ifname(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > IFNAME_MAX {
        return Err(format!(
            "must be at most {IFNAME_MAX} characters (has {})",
            value.len()
        ));
    }
    if value == "." || value == ".." {
        return Err("must not be '.' or '..'".into());
    }
    if value
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("must not contain '/', ':' or whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        for good in [
            "a",
            "default",
            "kube-ovn-vpc-network",
            "n1",
            &"a".repeat(63),
        ] {
            assert_eq!(check_dns1123_label(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a/b",
            "a@b",
            &"a".repeat(64),
        ] {
            assert!(check_dns1123_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names() {
        for good in ["net1", "eth0", "a.b", "x-y_z", "abcdefghijklmno"] {
            assert_eq!(check_ifname(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a:b",
            "a\tb",
            "abcdefghijklmnop",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }
}
