// Rebuild when a migration or a projection changes: both are embedded in the binary.
// Every folder under `projections/` is a projection; this writes the one registry the
// engine reads, so adding a projection touches no engine code.
use std::fmt::Write as _;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=projections");
    let mut dirs: Vec<_> = std::fs::read_dir("projections")
        .expect("the projections folder")
        .map(|e| e.expect("a projections entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut out = String::from("&[\n");
    for dir in dirs {
        let abs = std::fs::canonicalize(&dir).expect("a projection folder");
        for file in ["projection.json", "schema.sql", "fold.sql"] {
            assert!(abs.join(file).is_file(), "{} has no {file}", dir.display());
            println!("cargo:rerun-if-changed={}", dir.join(file).display());
        }
        let path = |f: &str| format!("{:?}", abs.join(f).display().to_string());
        writeln!(
            out,
            "    crate::project::ProjectionSource {{ manifest: include_str!({}), schema: include_str!({}), fold: include_str!({}) }},",
            path("projection.json"),
            path("schema.sql"),
            path("fold.sql")
        )
        .unwrap();
    }
    out.push(']');
    let target = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("projections.rs");
    std::fs::write(target, out).expect("write the projection registry");
}
