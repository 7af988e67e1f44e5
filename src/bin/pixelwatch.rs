//! `pixelwatch`: the scanner's command line. All work happens in the library.

fn main() -> std::process::ExitCode {
    pixelwatch::cli::main_with_args(std::env::args_os())
}
