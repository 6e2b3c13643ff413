//! Prints how long compiling the filter takes (to pick the engine settings tests use).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: compile_time FILE.wasm")?;
    let t = std::time::Instant::now();
    let host = host_test::Host::new(&path)?;
    println!("compile: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let _vm = host.start_vm()?;
    println!("start_vm: {:?}", t.elapsed());
    Ok(())
}
