//! Writes a generated city to a directory: `cargo run -p cityward-sim --example write_city DIR [size] [seed]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| {
        eprintln!("usage: write_city DIR [small|medium|large] [SEED]");
        std::process::exit(2)
    });
    let size: cityward_sim::Size = args
        .next()
        .as_deref()
        .unwrap_or("small")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        });
    let seed: u64 = args
        .next()
        .map(|s| s.parse().expect("SEED is a whole number"))
        .unwrap_or(1);
    let city = cityward_sim::generate_city(seed, size);
    if let Err(e) = city.write(std::path::Path::new(&dir)) {
        eprintln!("{e}");
        std::process::exit(1)
    }
}
