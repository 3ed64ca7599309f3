//! The `tollgate` binary: parse the command line, hand over to the library.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = tollgate::cli::Cli::parse();
    std::process::exit(tollgate::cli::run(cli));
}
