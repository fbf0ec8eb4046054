<#
.SYNOPSIS
  Export the Exchange Online forwarding posture for m365guard (read only: changes nothing).

.DESCRIPTION
  Graph cannot read mailbox forwarding or whether the tenant allows automatic forwarding, so
  this script reads them with the ExchangeOnlineManagement module and writes, into -OutDir:
    mailbox-forwarding.csv       Get-EXOMailbox -PropertySets Delivery (every mailbox)
    outbound-spam-policies.json  each policy's AutoForwardingMode, with the rules saying whom it covers
    remote-domains.json          AutoForwardEnabled per remote domain
    transport-rules.json         transport rules that redirect, copy or add recipients
    export-info.json             when the export was made (m365guard calls an old one stale)
  m365guard imports the folder ([enforce] exchange_export, [collect] exchange_forwarding_export
  for mailbox-forwarding.csv).

  App-only certificate authentication, as ScubaGear and Prowler document it: an app
  registration with the Exchange.ManageAsApp application permission (Office 365 Exchange
  Online), admin consent, its certificate in the machine's store, and the Global Reader role
  assigned to the app's service principal. No password is stored anywhere.

.EXAMPLE
  .\export-exchange.ps1 -AppId 00000000-0000-0000-0000-000000000000 `
      -Organization manbylodge.onmicrosoft.com -CertificateThumbprint ABCDEF... `
      -OutDir C:\m365guard\exports
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $AppId,
    [Parameter(Mandatory)] [string] $Organization,
    [Parameter(Mandatory)] [string] $CertificateThumbprint,
    [Parameter(Mandatory)] [string] $OutDir
)
$ErrorActionPreference = 'Stop'
Import-Module ExchangeOnlineManagement -MinimumVersion 3.0.0

function Write-Json([object] $Value, [string] $Name) {
    # -InputObject keeps a one-item list a list; UTF-8 without BOM on PowerShell 7, with on 5.1
    $path = Join-Path $staging $Name
    ConvertTo-Json -InputObject @($Value) -Depth 6 | Set-Content -Path $path -Encoding UTF8
}

$staging = Join-Path $OutDir ('.export-' + [guid]::NewGuid().ToString('N'))
New-Item -ItemType Directory -Path $staging -Force | Out-Null
Connect-ExchangeOnline -AppId $AppId -Organization $Organization `
    -CertificateThumbprint $CertificateThumbprint -ShowBanner:$false
try {
    Get-EXOMailbox -ResultSize Unlimited -PropertySets Minimum, Delivery |
        Select-Object UserPrincipalName, PrimarySmtpAddress, ForwardingSmtpAddress,
                      ForwardingAddress, DeliverToMailboxAndForward |
        Export-Csv -Path (Join-Path $staging 'mailbox-forwarding.csv') -NoTypeInformation -Encoding UTF8

    $rules = @(Get-HostedOutboundSpamFilterRule)
    $policies = foreach ($policy in Get-HostedOutboundSpamFilterPolicy) {
        [pscustomobject]@{
            Name               = $policy.Name
            IsDefault          = [bool]$policy.IsDefault
            AutoForwardingMode = [string]$policy.AutoForwardingMode
            Rules              = @($rules | Where-Object { $_.HostedOutboundSpamFilterPolicy -eq $policy.Name } |
                ForEach-Object { [pscustomobject]@{
                    Name = $_.Name; State = [string]$_.State; Priority = $_.Priority
                    From = @($_.From); FromMemberOf = @($_.FromMemberOf)
                    SenderDomainIs = @($_.SenderDomainIs) } })
        }
    }
    Write-Json $policies 'outbound-spam-policies.json'

    Write-Json (Get-RemoteDomain | Select-Object @{n='Identity';e={[string]$_.Identity}},
                DomainName, AutoForwardEnabled) 'remote-domains.json'

    Write-Json (Get-TransportRule | Where-Object {
            $_.RedirectMessageTo -or $_.BlindCopyTo -or $_.CopyTo -or $_.AddToRecipients } |
        ForEach-Object { [pscustomobject]@{
            Name = $_.Name; State = [string]$_.State; SentToScope = [string]$_.SentToScope
            RedirectMessageTo = @($_.RedirectMessageTo | ForEach-Object { [string]$_ })
            BlindCopyTo = @($_.BlindCopyTo | ForEach-Object { [string]$_ })
            CopyTo = @($_.CopyTo | ForEach-Object { [string]$_ })
            AddToRecipients = @($_.AddToRecipients | ForEach-Object { [string]$_ }) } }) 'transport-rules.json'

    [pscustomobject]@{ exportedAt = (Get-Date).ToUniversalTime().ToString('o'); organization = $Organization } |
        ConvertTo-Json | Set-Content -Path (Join-Path $staging 'export-info.json') -Encoding UTF8

    # replace the previous export only once the new one is whole
    foreach ($file in Get-ChildItem $staging) {
        Move-Item -Path $file.FullName -Destination (Join-Path $OutDir $file.Name) -Force
    }
}
finally {
    Remove-Item -Path $staging -Recurse -Force -ErrorAction SilentlyContinue
    Disconnect-ExchangeOnline -Confirm:$false
}
