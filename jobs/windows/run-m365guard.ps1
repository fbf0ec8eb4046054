<#
.SYNOPSIS
  Runs one m365guard command for Windows Task Scheduler and keeps its exit code.
.DESCRIPTION
  Task Scheduler shows the script's exit code as "Last Run Result" (0x3 = new high-severity
  findings, 0x4 = partial run, 0x5 = another run still going; see jobs\README.md). Output is
  appended to a log under the output folder. Secrets are never passed on the command line: set
  M365GUARD_CLIENT_SECRET_FILE or M365GUARD_CERT_PASSWORD for the task's account instead.
.EXAMPLE
  run-m365guard.ps1 -Command nightly
#>
param(
    [Parameter(Mandatory = $true)][ValidateSet("nightly", "weekly")][string]$Command,
    [string]$InstallDir = "C:\Program Files\m365guard",
    [string]$Config = "C:\ProgramData\m365guard\policies.toml",
    [string]$LogDir = "C:\ProgramData\m365guard\logs"
)
$ErrorActionPreference = "Stop"
New-Item -ItemType Directory -Force -Path $LogDir | Out-Null
$log = Join-Path $LogDir "$Command.log"
$exe = Join-Path $InstallDir ".venv\Scripts\m365guard.exe"
$started = Get-Date -Format o
& $exe $Command --config $Config *>> $log
$code = $LASTEXITCODE
Add-Content -Path $log -Value "$started $Command exit $code"
exit $code
