//! One module per subcommand: each turns parsed flags into checked options, calls the library
//! and prints the result. Nothing here is reused by another command.

pub mod segment;
