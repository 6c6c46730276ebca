fn main() {
    let city = cityward_sim::generate_city(1, cityward_sim::Size::Small);
    let out = std::io::stdout();
    cityward_sim::simulate_to(&city, 1, cityward_sim::default_start(), std::time::Duration::from_secs(3600), out.lock()).unwrap();
}
