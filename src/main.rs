use clap::Parser;

#[global_allocator]
static ALLOC: kelp::alloc::KelpAlloc = kelp::alloc::KelpAlloc;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = kelp::config::Config::parse();
    if let Err(e) = kelp::server::run(config) {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}
