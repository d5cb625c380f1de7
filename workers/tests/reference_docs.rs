//! The reference in docs/ is written for people, and checked here against
//! the definitions it documents: every setting the binaries read is in
//! docs/configuration.md with its default, nothing else is, and the error
//! codes of docs/api.md are exactly `ErrorCode`'s with their statuses.
//! (This lives in the worker's package because it sees both binaries.)

use std::{collections::BTreeMap, fs, path::Path};

use clap::CommandFactory;
use flashsale::{
    config::{ApiSettings, LogSettings, RuntimeSettings, Setting, documented, settings_of},
    http::ErrorCode,
};
use flashsale_workers::settings::WorkerCli;

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The rows of the tables under `## heading` whose first cell is a name in
/// backticks: name -> the other cells.
fn table_rows(text: &str, heading: &str) -> BTreeMap<String, Vec<String>> {
    let section = text
        .split("\n## ")
        .find(|section| section.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<String> = line
                .strip_prefix("| `")?
                .split(" | ")
                .map(|cell| cell.trim().trim_end_matches('|').trim().to_owned())
                .collect();
            let name = cells[0].strip_suffix('`')?.to_owned();
            Some((name, cells[1..].to_vec()))
        })
        .collect()
}

/// A documented default matches the binary's own, where it has one.
fn assert_default(row: &[String], setting: &Setting) {
    if let Some(default) = &setting.default {
        assert_eq!(
            row[0].trim_matches('`'),
            default,
            "docs/configuration.md gives {} another default than the binary",
            setting.env
        );
    }
}

#[test]
fn the_api_node_table_lists_every_setting_of_the_api_with_its_default() {
    let rows = table_rows(&doc("configuration.md"), "API nodes");
    let settings: Vec<Setting> = documented::<ApiSettings>()
        .into_iter()
        .chain(documented::<LogSettings>())
        .chain(documented::<RuntimeSettings>())
        .collect();
    for setting in &settings {
        let row = rows
            .get(&setting.env)
            .unwrap_or_else(|| panic!("{} is missing from docs/configuration.md", setting.env));
        assert_default(row, setting);
    }
    for name in rows.keys() {
        assert!(
            settings.iter().any(|setting| &setting.env == name),
            "docs/configuration.md documents {name}, which no API node reads"
        );
    }
}

#[test]
fn the_worker_table_lists_every_setting_only_the_worker_reads() {
    let text = doc("configuration.md");
    let (api, workers) = (table_rows(&text, "API nodes"), table_rows(&text, "Workers"));
    let settings = settings_of(&WorkerCli::command());
    for setting in &settings {
        let row = workers.get(&setting.env).or_else(|| api.get(&setting.env));
        let row = row.unwrap_or_else(|| {
            panic!(
                "{} (worker) is missing from docs/configuration.md",
                setting.env
            )
        });
        assert_default(row, setting);
    }
    for name in workers.keys() {
        assert!(
            settings.iter().any(|setting| &setting.env == name),
            "docs/configuration.md documents {name} for workers, which the worker does not read"
        );
    }
}

#[test]
fn the_worker_flags_are_named_after_their_variables() {
    for setting in settings_of(&WorkerCli::command()) {
        assert!(setting.flag_is_named_after_its_variable(), "{setting:?}");
    }
}

#[test]
fn the_error_code_table_is_exactly_the_codes_the_api_answers() {
    let rows = table_rows(&doc("api.md"), "Errors");
    let codes: BTreeMap<String, String> = ErrorCode::all()
        .map(|code| (code.as_str().to_owned(), code.status().as_u16().to_string()))
        .collect();
    let documented: BTreeMap<String, String> = rows
        .into_iter()
        .map(|(code, cells)| (code, cells[0].clone()))
        .collect();
    assert_eq!(
        documented, codes,
        "docs/api.md's error codes (code -> status) differ from ErrorCode"
    );
}
