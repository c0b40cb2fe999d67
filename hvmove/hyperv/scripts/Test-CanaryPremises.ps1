# Test-CanaryPremises: observes, on the canary's own disks, what hvmove assumes about this host.
# (1) Whether Get-VHD -Path takes a name with brackets literally: the documentation says it
#     accepts no wildcards, a decompiled cmdlet suggests it resolves them (review finding 5).
# (2) Whether Test-VHD gives a usable answer for a disk that is attached: the base disk is
#     mounted read-only, tested, and read back (the SHA-256 of the pattern file New-CanaryVM
#     wrote), then dismounted.
# (3) The UI culture and Get-VM's error for an unknown id, to show the language of the host's
#     messages.
# Changes nothing that outlives the call (a read-only mount, always dismounted).
# Prints one CanaryPremises document.
param([string]$DiskPath, [string]$BasePath)
$ErrorActionPreference = 'Stop'

$literalOk = $false
$literalDetail = ''
try {
    $found = @(Get-VHD -Path $DiskPath -ErrorAction Stop)
    $literalOk = ($found.Count -eq 1 -and [string]$found[0].Path -eq $DiskPath)
    $literalDetail = "Get-VHD returned $($found.Count) disk(s): $(@($found | ForEach-Object { [string]$_.Path }) -join ', ')"
} catch {
    $literalDetail = "Get-VHD failed: $($_.Exception.Message)"
}

$attachedOk = $null
$attachedDetail = ''
$hash = ''
$mounted = $false
try {
    $vhd = Mount-VHD -Path $BasePath -ReadOnly -Passthru
    $mounted = $true
    $disk = Get-Disk -Number $vhd.DiskNumber
    $result = @(Test-VHD -Path $BasePath -ErrorAction SilentlyContinue -ErrorVariable testErrors)
    $attachedOk = ($result.Count -gt 0 -and $result[0] -eq $true)
    if ($testErrors.Count -gt 0) { $attachedDetail = [string]$testErrors[0].Exception.Message }
    $letter = [string](Get-Partition -DiskNumber $disk.Number | Where-Object { $_.DriveLetter } |
        Select-Object -First 1).DriveLetter
    if ($letter) {
        $hash = [string](Get-FileHash -LiteralPath "$($letter):\hvmove-canary.bin" -Algorithm SHA256).Hash
    } else {
        $attachedDetail = ($attachedDetail + ' (the mounted disk got no drive letter)').Trim()
    }
} catch {
    $attachedDetail = "Mount-VHD or Test-VHD failed: $($_.Exception.Message)"
} finally {
    if ($mounted) { Dismount-VHD -Path $BasePath }
}

$sampleError = ''
$sampleErrorId = ''
$null = Get-VM -Id ([guid]::NewGuid()) -ErrorAction SilentlyContinue -ErrorVariable lookupErrors
if ($lookupErrors.Count -gt 0) {
    $sampleError = [string]$lookupErrors[0].Exception.Message
    $sampleErrorId = [string]$lookupErrors[0].FullyQualifiedErrorId
}

$out = [pscustomobject]@{
    literal_path_ok     = [bool]$literalOk
    literal_path_detail = $literalDetail
    attached_test_vhd   = $attachedOk
    attached_detail     = $attachedDetail
    pattern_sha256      = $hash.ToLowerInvariant()
    ui_culture          = [string](Get-UICulture).Name
    sample_error        = $sampleError
    sample_error_id     = $sampleErrorId
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
