"""The billing domain: contract models, money, the collections policy and its decision core."""
