fn main() {
    mta_sts_smol::query::main()
}
