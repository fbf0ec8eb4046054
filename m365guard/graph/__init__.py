"""The only package that talks to Microsoft Graph (msal, msgraph-sdk)."""
