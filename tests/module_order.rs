//! The runtime crate's modules depend on each other one way only (DESIGN.md, "Module order"):
//! each module imports only from modules before it in [`ORDER`]. This test reads every source
//! file's code (not its comments: a doc link is not a dependency) and fails on any `crate::`
//! path that points the other way, naming the file, the line and the rule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The order: a module may use the ones before it. Shared utilities first, then the data flow
/// of a connection: events and errors, layers and sessions, the scope, the connection's
/// plumbing, the `Application` contract, what is built on it, and what runs it.
const ORDER: &[&str] = &[
    "test_support",
    "path_grammar",
    "deque",
    "error",
    "event",
    "ratelog",
    "metrics",
    "redis_retry",
    "security",
    "layers",
    "session",
    "scope",
    "connection",
    "application",
    "middleware",
    "django",
    "routing",
    "consumer",
    "client",
    "server",
    "axum",
    "worker",
    "testing",
    "__private",
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|known| *known == module)
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs");
    match name {
        "lib" => None,
        "private" => Some("__private".to_owned()),
        other => Some(other.to_owned()),
    }
}

/// Names `lib.rs` re-exports at the crate root, with the module they come from
/// (`crate::ProtocolTypeRouter` is a dependency on `routing`).
fn root_reexports(lib: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let mut statement = String::new();
    for line in lib.lines().map(str::trim) {
        if statement.is_empty() && !line.starts_with("pub use ") {
            continue;
        }
        statement.push_str(line);
        if !line.ends_with(';') {
            continue;
        }
        let path = statement.trim_start_matches("pub use ").trim_end_matches(';').to_owned();
        statement.clear();
        let Some((module, rest)) = path.split_once("::") else { continue };
        let module = module.trim_start_matches("crate::").to_owned();
        let items = rest.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let name = item.rsplit("::").next().unwrap_or(item).to_owned();
            names.insert(name, module.clone());
        }
    }
    names
}

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The modules a line of code names through `crate::` (`crate::x::...`, `use crate::{x, y}`).
fn referenced(line: &str, root: &HashMap<String, String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `$crate::` and `channels_crate::` are other paths.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or(""))
                .collect()
        } else {
            vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")]
        };
        for name in names.into_iter().filter(|name| !name.is_empty()) {
            if rank(name).is_some() {
                found.push(name.to_owned());
            } else if let Some(module) = root.get(name) {
                found.push(module.clone());
            }
        }
    }
    found
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("channels/src");
    let root = root_reexports(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let Some(own) = rank(&module) else {
            unknown.push(module);
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source file");
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for target in referenced(code, &root) {
                if rank(&target).is_some_and(|theirs| theirs > own) {
                    violations.push(format!(
                        "{}:{}: `{module}` uses `{target}`, which comes after it\n    {}",
                        file.strip_prefix(&src).unwrap_or(file).display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(unknown.is_empty(), "modules missing from ORDER (place them in it): {unknown:?}");
    assert!(violations.is_empty(), "imports against the module order {ORDER:?}:\n{}", violations.join("\n"));
}

#[test]
fn the_check_sees_a_violation() {
    let root = HashMap::from([("ProtocolTypeRouter".to_owned(), "routing".to_owned())]);
    assert_eq!(referenced("use crate::server::Server;", &root), ["server"]);
    assert_eq!(referenced("use crate::{connection::Inbox, scope::Scope};", &root), ["connection", "scope"]);
    assert_eq!(referenced("let r: crate::ProtocolTypeRouter = x;", &root), ["routing"]);
    assert!(referenced("$crate::server::x", &root).is_empty());
}
