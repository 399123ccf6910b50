//! The man pages in `man/` against the programs and the config reference:
//! every option `--help` lists is described in the page's OPTIONS section,
//! every key of `config_examples/full.yml` is an entry of
//! mta-sts-daemon.yml(5), and the pages use only the `man` macros they are
//! meant to (a typo in a macro name silently drops text).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const DAEMON: &str = env!("CARGO_BIN_EXE_mta-sts-daemon");
const QUERY: &str = env!("CARGO_BIN_EXE_mta-sts-query");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn help(program: &str) -> String {
    let out = Command::new(program)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} --help: {:?}", out.status);
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// Roff source as the reader sees it, roughly: comments dropped, escapes
/// for hyphens, quotes and fonts resolved, macro names removed.
fn plain(roff: &str) -> String {
    let mut out = String::new();
    for line in roff.lines() {
        if line.starts_with(".\\\"") {
            continue;
        }
        let text = match line.strip_prefix('.') {
            Some(rest) => rest.split_once(' ').map_or("", |(_, args)| args),
            None => line,
        };
        let text = text
            .replace("\\-", "-")
            .replace("\\(dq", "\"")
            .replace("\\(sc", "§")
            .replace("\\e", "\\")
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fR", "")
            .replace("\\fP", "")
            .replace('"', "");
        out.push_str(&text);
        out.push('\n');
    }
    out
}

/// The text of section `.SH NAME` (up to the next `.SH`), as [`plain`] text.
fn section(roff: &str, name: &str) -> String {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in roff.lines() {
        if let Some(title) = line.strip_prefix(".SH ") {
            inside = title.trim().trim_matches('"') == name;
            continue;
        }
        if inside {
            lines.push(line);
        }
    }
    assert!(!lines.is_empty(), "no section {name}");
    plain(&lines.join("\n"))
}

/// Whether `token` occurs in `text` as a whole word (options and keys
/// contain `-` and `_`, so those count as word characters).
fn has_word(text: &str, token: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(token).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + token.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// The options named anywhere in a `--help` text: words that start with
/// `-` or `--` after a space, `[`, `(`, `|` or a line start.
fn help_options(help: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in help.lines() {
        let chars: Vec<char> = line.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let starts = i == 0 || matches!(chars[i - 1], ' ' | '[' | '(' | '|');
            if c != '-' || !starts {
                continue;
            }
            let word: String = chars[i..]
                .iter()
                .take_while(|&&c| c.is_ascii_alphanumeric() || c == '-')
                .collect();
            let name = word.trim_start_matches('-');
            if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
                found.insert(word);
            }
        }
    }
    found
}

/// Positional arguments listed under `Arguments:` (first column, upper case).
fn help_arguments(help: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut inside = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            inside = line.trim_end() == "Arguments:";
            continue;
        }
        if let Some(word) = line.split_whitespace().next().filter(|_| inside) {
            if word.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                found.insert(word.to_owned());
            }
        }
    }
    found
}

/// Options of `help` that the page's OPTIONS section does not mention.
fn undocumented_options(help: &str, page: &str) -> Vec<String> {
    let options = section(page, "OPTIONS");
    help_options(help)
        .into_iter()
        .filter(|o| !has_word(&options, o))
        .collect()
}

/// The words of every `.TP` tag line and `.SS` title: the entries a page
/// documents.
fn entries(roff: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = roff.lines().collect();
    let mut tags = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let tag = if line.trim_end() == ".TP" {
            lines.get(i + 1).copied()
        } else if line.starts_with(".SS ") {
            Some(*line)
        } else {
            None
        };
        if let Some(tag) = tag {
            for word in plain(tag).split(|c: char| c.is_whitespace() || c == ',') {
                if !word.is_empty() {
                    tags.insert(word.to_owned());
                }
            }
        }
    }
    tags
}

/// Every key of a YAML document, at any depth, except the names directly
/// under `zones` (those are the user's zone names; the keys below them count).
fn yaml_keys(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(value: &serde_yaml::Value, parent: &str, all: &mut BTreeSet<String>) {
        let serde_yaml::Value::Mapping(map) = value else {
            return;
        };
        for (key, child) in map {
            let key = key.as_str().expect("string keys").to_owned();
            if parent != "zones" {
                all.insert(key.clone());
            }
            walk(child, &key, all);
        }
    }
    let doc: serde_yaml::Value = serde_yaml::from_str(text).expect("full.yml is YAML");
    let top = doc
        .as_mapping()
        .expect("a mapping at the top")
        .keys()
        .map(|k| k.as_str().expect("string keys").to_owned())
        .collect();
    let mut all = BTreeSet::new();
    walk(&doc, "", &mut all);
    (top, all)
}

/// Macros the pages may use; anything else is a typo or a groff-only macro.
const MACROS: &[&str] = &[
    "TH", "SH", "SS", "TP", "IP", "PP", "RS", "RE", "B", "I", "BR", "BI", "IB", "IR", "RB", "RI",
    "nf", "fi", "br",
];

fn unknown_macros(roff: &str) -> Vec<String> {
    roff.lines()
        .filter(|l| l.starts_with('.') && !l.starts_with(".\\\""))
        .filter_map(|l| {
            let name = l[1..].split_whitespace().next().unwrap_or("");
            (!MACROS.contains(&name)).then(|| l.to_owned())
        })
        .collect()
}

#[test]
fn every_daemon_option_is_in_the_man_page() {
    let help = help(DAEMON);
    let options = help_options(&help);
    // -h -V -v -c -l -p -u -g and their long forms, --disable-uvloop.
    assert!(options.len() >= 17, "too few options parsed: {options:?}");
    let page = read("man/mta-sts-daemon.8");
    let missing = undocumented_options(&help, &page);
    assert!(
        missing.is_empty(),
        "not in mta-sts-daemon.8 OPTIONS: {missing:?}"
    );
}

#[test]
fn every_query_option_and_argument_is_in_the_man_page() {
    let help = help(QUERY);
    let options = help_options(&help);
    assert!(options.len() >= 9, "too few options parsed: {options:?}");
    let page = read("man/mta-sts-query.1");
    let missing = undocumented_options(&help, &page);
    assert!(
        missing.is_empty(),
        "not in mta-sts-query.1 OPTIONS: {missing:?}"
    );
    let arguments = help_arguments(&help);
    assert!(arguments.contains("DOMAIN"), "{arguments:?}");
    let documented = section(&page, "ARGUMENTS");
    for argument in arguments {
        assert!(
            has_word(&documented, &argument),
            "{argument} not in ARGUMENTS"
        );
    }
}

#[test]
fn every_key_of_full_yml_is_an_entry_of_the_config_man_page() {
    let (top, all) = yaml_keys(&read("config_examples/full.yml"));
    assert!(top.len() >= 12, "too few top-level keys parsed: {top:?}");
    assert!(all.contains("cache_size") && all.contains("grace_ratio"));
    assert!(!all.contains("myzone"), "zone names are not keys");
    let documented = entries(&read("man/mta-sts-daemon.yml.5"));
    let missing: Vec<_> = all.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "not in mta-sts-daemon.yml.5: {missing:?}"
    );
}

/// What the pages promise beyond today's `--help` and full.yml: options and
/// keys other parts of the code add, documented ahead of them.
#[test]
fn pages_document_the_administration_interface() {
    let daemon = section(&read("man/mta-sts-daemon.8"), "OPTIONS");
    assert!(has_word(&daemon, "--check-config"));
    let query = section(&read("man/mta-sts-query.1"), "OPTIONS");
    for word in [
        "--cache", "--all", "--json", "list", "show", "export", "import", "purge",
    ] {
        assert!(
            has_word(&query, word),
            "mta-sts-query.1 OPTIONS lacks {word}"
        );
    }
    let keys = entries(&read("man/mta-sts-daemon.yml.5"));
    for key in [
        "metrics",
        "listen",
        "dane",
        "read_timeout",
        "idle_timeout",
        "max_connections",
        "max_lookups",
        "max_lookups_per_connection",
        "resolver",
        "strict_testing",
        "require_sni",
        "tlsrpt",
    ] {
        assert!(keys.contains(key), "mta-sts-daemon.yml.5 lacks {key}");
    }
}

#[test]
fn pages_use_only_known_macros() {
    for page in [
        "man/mta-sts-daemon.8",
        "man/mta-sts-query.1",
        "man/mta-sts-daemon.yml.5",
    ] {
        let bad = unknown_macros(&read(page));
        assert!(bad.is_empty(), "{page}: {bad:?}");
    }
}

/// The checks above catch what they are for.
#[test]
fn the_checks_find_what_is_missing() {
    let help = "Usage: prog [-h] [--frob N]\n\nOptions:\n  -h, --help   help\n      --frob N   frobnicate (see mta-sts-daemon)\n";
    assert_eq!(
        help_options(help),
        BTreeSet::from(["-h", "--help", "--frob"].map(String::from))
    );
    let page = ".TH P 1\n.SH OPTIONS\n.TP\n.BR \\-h \", \" \\-\\-help\nhelp\n.SH SEE ALSO\n\\-\\-frob is elsewhere\n";
    assert_eq!(undocumented_options(help, page), ["--frob"]);
    // A longer option does not stand in for a shorter one.
    let page = ".SH OPTIONS\n\\-h \\-\\-help \\-\\-frobnicate\n";
    assert_eq!(undocumented_options(help, page), ["--frob"]);
    let (_, keys) = yaml_keys("a: 1\nzones:\n  z1:\n    b: 2\n");
    assert_eq!(keys, BTreeSet::from(["a", "zones", "b"].map(String::from)));
    let tags = entries(".TP\n.BR a \", \" b\ntext c\n.TP\n.B zones\n");
    assert!(tags.contains("a") && tags.contains("b") && tags.contains("zones"));
    assert!(!tags.contains("c"));
    assert_eq!(unknown_macros(".TH x\n.Bold y\n.\\\" note\n"), [".Bold y"]);
    assert_eq!(
        help_arguments("Arguments:\n  DOMAIN   d\n  KNOWN_ID  k\nOptions:\n  -h  h\n"),
        BTreeSet::from(["DOMAIN", "KNOWN_ID"].map(String::from))
    );
}
