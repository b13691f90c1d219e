//! Surge pricing from demand and supply per H3 cell.
