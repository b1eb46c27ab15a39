//! docs/export-types.md against the registry: every type is in the table
//! once, with the columns, file extension and destination the code reports.

use std::collections::BTreeMap;

use vf_export::exports::Registry;

/// The first backtick span of a cell.
fn first_code(cell: &str) -> Option<&str> {
    let rest = cell.split_once('`')?.1;
    Some(rest.split_once('`')?.0)
}

#[test]
fn docs_table_matches_the_registry() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/export-types.md"))
        .unwrap();
    let mut rows = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 6, "{line}");
        let name = first_code(cells[0]).unwrap().to_string();
        assert!(rows.insert(name.clone(), cells).is_none(), "{name} twice");
    }
    let reg = Registry::new();
    assert_eq!(
        rows.keys().map(String::as_str).collect::<Vec<_>>(),
        reg.names(),
        "the table lists exactly the registered types"
    );
    for ty in reg.all() {
        let cells = &rows[ty.name()];
        let columns: Vec<&str> = first_code(cells[3]).unwrap().split(", ").collect();
        assert_eq!(columns, ty.columns(), "{} columns", ty.name());
        let ext = first_code(cells[4]).unwrap();
        assert_eq!(ext, format!(".{}", ty.format().ext), "{} file", ty.name());
        assert_eq!(
            first_code(cells[5]).unwrap(),
            ty.destination().bucket_variable(),
            "{} destination",
            ty.name()
        );
    }
}
