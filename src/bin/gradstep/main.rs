//! The `gradstep` command-line tool.

fn main() {
    println!("gradstep {}", env!("CARGO_PKG_VERSION"));
}
