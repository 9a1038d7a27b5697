/// The release this binary is (`tessera --version`). Bump it with each release.
let tesseraVersion = "0.2.0-dev"
