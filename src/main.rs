use clap::Parser;

#[global_allocator]
static ALLOC: kelp::alloc::KelpAlloc = kelp::alloc::KelpAlloc;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut config = kelp::config::Config::parse();
    if let Some(kelp::config::Command::User(cmd)) = config.command.take() {
        match kelp::auth::cli::run(cmd, std::io::stdin().lock()) {
            Ok(done) => println!("{done}"),
            Err(e) => {
                eprintln!("kelp user: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    if let Err(e) = kelp::server::run(config) {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}
