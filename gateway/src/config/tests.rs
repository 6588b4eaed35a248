//! Unit tests of the config module: each class of mistake, defaults, and the shipped files.
