fn main() {
    mta_sts_smol::daemon::main()
}
