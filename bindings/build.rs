fn main() {
    // Lets the cdylib be loaded by Node's `process.dlopen` as an addon: napi-build
    // sets the linker flags that leave Node-API symbols to be resolved at load time.
    napi_build::setup();
}
