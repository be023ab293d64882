//! Placeholders of the deployment template (`packaging/mailveil.toml`):
//! string values that begin with [`MARK`]. A configuration still holding
//! any is refused with every one of them listed, each under its key with
//! the template's hint, so that an operator learns in one go what is left
//! to set. Reads the text only; decides nothing else about it.

/// How a value the operator must replace begins.
pub(crate) const MARK: &str = "FILL IN:";

/// Every placeholder left in `text`, as (key path, hint), in file order.
/// Text that is not TOML has none here: the parser reports it.
pub(super) fn unfilled(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        walk_table(&table, "", &mut found);
    }
    // The table comes sorted by key; list them as they stand in the file.
    found.sort_by_key(|(_, _, value)| text.find(value.as_str()).unwrap_or(usize::MAX));
    found
        .into_iter()
        .map(|(key, hint, _)| (key, hint))
        .collect()
}

/// (key path, hint, the value as written).
type Found = Vec<(String, String, String)>;

fn walk_table(table: &toml::Table, prefix: &str, found: &mut Found) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        walk(value, &path, found);
    }
}

fn walk(value: &toml::Value, path: &str, found: &mut Found) {
    match value {
        toml::Value::String(s) => {
            if let Some(hint) = s.trim_start().strip_prefix(MARK) {
                found.push((path.to_string(), hint.trim().to_string(), s.clone()));
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), found);
            }
        }
        toml::Value::Table(table) => walk_table(table, path, found),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_found_under_its_key_in_file_order() {
        let text = r#"
[server]
hostname = "FILL IN: this relay's public name"

[[upstream]]
name = "provider"
domains = ["example.org", "FILL IN: a domain"]
smtp = { host = "FILL IN:  the SMTP host ", port = 465, tls = "implicit" }
"#;
        assert_eq!(
            unfilled(text),
            vec![
                (
                    "server.hostname".to_string(),
                    "this relay's public name".to_string()
                ),
                ("upstream[0].domains[1]".to_string(), "a domain".to_string()),
                (
                    "upstream[0].smtp.host".to_string(),
                    "the SMTP host".to_string()
                ),
            ]
        );
    }

    /// The template the package installs: refused with its four
    /// placeholders named, and valid once they are filled in.
    #[test]
    fn the_shipped_template_names_what_to_fill_in_and_is_valid_once_filled() {
        let template = include_str!("../../packaging/mailveil.toml");
        let err = crate::config::Config::parse(template).expect_err("placeholders left");
        let crate::config::ConfigError::Unfilled(left) = &err else {
            panic!("{err}");
        };
        let keys: Vec<&str> = left.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.hostname",
                "upstream[0].smtp.host",
                "upstream[0].imap.host",
                "upstream[0].domains[0]"
            ]
        );
        assert!(
            err.to_string()
                .starts_with("4 settings of the template still to fill in")
        );
        let mut filled = template.to_string();
        for (value, with) in [
            ("this relay's public name", "relay.example.net"),
            ("SMTP submission server", "mail.example.org"),
            ("IMAP server", "mail.example.org"),
            ("mail domain", "example.org"),
        ] {
            let start = filled.find(&format!("\"{MARK} ")).expect("a placeholder");
            let end = start + 1 + filled[start + 1..].find('"').expect("its end");
            assert!(
                filled[start..end].contains(value),
                "{}",
                &filled[start..end]
            );
            filled.replace_range(start..=end, &format!("\"{with}\""));
        }
        let config = crate::config::Config::parse(&filled).expect("filled in");
        assert_eq!(config.listeners.len(), 4);
        assert!(unfilled(&filled).is_empty());
    }

    #[test]
    fn a_filled_file_or_one_that_is_not_toml_has_none() {
        assert!(unfilled("[server]\nhostname = \"relay.example.net\"\n").is_empty());
        assert!(unfilled("[server\nhostname = \"FILL IN: x\"").is_empty());
    }
}
