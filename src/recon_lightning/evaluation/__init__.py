"""Evaluation protocols and reporting: metrics, voting, SVM features, results files and tables."""
