//! AMD SVM backend.
